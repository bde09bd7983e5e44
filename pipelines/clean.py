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

from dataclasses import dataclass
from pathlib import Path

from common.cli import UserError
from common.options import arg
from pipelines._command import Command, Context


@dataclass
class CleanOptions:
    """The flags of ``python -m pipelines.clean``."""

    path: str = arg("folder to clean of stale staging, recursively (default: .)", default=".")
    tracking_uri: str | None = arg("MLflow tracking URI (default: $MLFLOW_TRACKING_URI, ...)", default=None)
    dry_run: bool = arg("only list what would be removed or marked", default=False)
    json: bool = arg("print the summary as one JSON object", default=False)
    verbose: bool = arg("show third-party warnings", default=False)


def run(o: CleanOptions, ctx: Context) -> dict[str, object]:
    """Remove stale staging under ``--path`` and mark orphaned runs KILLED (or list them with ``--dry-run``)."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - MLflow loads when the command runs: --help stays fast

    from common.atomic import clean_stale_staging  # noqa: PLC0415 - loaded when the command runs
    from common.tracking import _store_path, mark_orphaned_runs, resolve_tracking_uri, setup_tracking  # noqa: PLC0415 - MLflow loads when the command runs

    root = Path(o.path)
    if not root.is_dir():
        raise UserError(f"--path {o.path}: no such folder")
    verb = "would remove" if o.dry_run else "removed"
    staged = clean_stale_staging(root, recursive=True, dry_run=o.dry_run)
    for entry in staged:
        print(f"{verb} {entry}")
    uri = resolve_tracking_uri(o.tracking_uri)
    local = _store_path(uri)
    runs: list = []
    if local is None or local.exists():  # never create a store just to find it empty
        setup_tracking(uri, verbose=o.verbose)
        client = MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = mark_orphaned_runs(ids, tracking_uri=uri, dry_run=o.dry_run)
        mark = "would mark" if o.dry_run else "marked"
        for r in runs:
            print(f"{mark} run {r.info.run_id} ({r.info.run_name}, pid {r.data.tags.get('landslide.pid')}) KILLED")
    return {
        "staging_" + ("found" if o.dry_run else "removed"): len(staged),
        "runs_" + ("found" if o.dry_run else "marked_killed"): len(runs),
        "tracking_uri": uri,
        "dry_run": o.dry_run,
    }


COMMAND = Command("clean", CleanOptions, run, doc=__doc__)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
