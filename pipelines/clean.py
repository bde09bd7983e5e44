"""``python -m pipelines.clean``: remove what killed commands left behind (SIGKILL, power loss, OOM killer).

* Hidden staging files and folders of atomic writes (``.<name>.p<pid>@<host>.<random>.tmp``) under
  ``--path`` (default: the working directory, recursively, hidden folders skipped) whose process is gone.
* MLflow runs still ``RUNNING`` in the store whose process (tags ``landslide.pid``/``landslide.host``) is
  gone: they are marked ``KILLED``. A run can still be continued with ``--resume`` where its command offers it.

Only entries and runs made on this host are judged, and those of a live process are never touched. Every
command already does this for its own output folder and experiment when it starts; this command does it
on demand. ``--dry-run`` lists without changing anything.

Example::

    python -m pipelines.clean --path outputs --dry-run
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient

from common.atomic import clean_stale_staging
from common.cli import UserError, print_summary, run_main
from common.tracking import _store_path, mark_orphaned_runs, resolve_tracking_uri, setup_tracking


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.clean", description=__doc__.split("\n\n")[0])
    p.add_argument("--path", default=".", help="folder to clean of stale staging, recursively (default: .)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, ...)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed or marked")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--verbose", action="store_true", help="show third-party warnings")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.path)
    if not root.is_dir():
        raise UserError(f"--path {args.path}: no such folder")
    verb = "would remove" if args.dry_run else "removed"
    staged = clean_stale_staging(root, recursive=True, dry_run=args.dry_run)
    for entry in staged:
        print(f"{verb} {entry}")
    uri = resolve_tracking_uri(args.tracking_uri)
    local = _store_path(uri)
    runs: list = []
    if local is None or local.exists():  # never create a store just to find it empty
        setup_tracking(uri, verbose=args.verbose)
        client = MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = mark_orphaned_runs(ids, tracking_uri=uri, dry_run=args.dry_run)
        mark = "would mark" if args.dry_run else "marked"
        for run in runs:
            print(
                f"{mark} run {run.info.run_id} ({run.info.run_name}, pid {run.data.tags.get('landslide.pid')}) KILLED"
            )
    print_summary(
        {
            "staging_" + ("found" if args.dry_run else "removed"): len(staged),
            "runs_" + ("found" if args.dry_run else "marked_killed"): len(runs),
            "tracking_uri": uri,
            "dry_run": args.dry_run,
        },
        as_json=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
