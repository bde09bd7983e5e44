"""``python -m pipelines.fetch_dataset``: download a public landslide training set, verified, into the layout
``pipelines.train_imagery --data`` reads.

Streams every file with a progress bar (size, rate, ETA), resumes with HTTP ranges (``--resume`` after a killed
run, and by itself after a dropped connection), checks sizes and checksums (the host's published ones where
there are any, else the size and sha256 of the first download recorded in the lock file), checks the free
disk space first and unpacks each part into its folder, published whole: a killed or failed run never leaves a
folder that looks complete. ``--verify-only`` re-checks a fetched folder without the network. Where the
files, sizes and checksums come from: :mod:`imagery.data.fetch`.

Examples::

    python -m pipelines.fetch_dataset landslide4sense --out data/l4s --parts train,val
    python -m pipelines.train_imagery --data data/l4s ...
    python -m pipelines.fetch_dataset sen12landslides --out data/s12ls --parts s2,s1asc --resume
    python -m pipelines.fetch_dataset landslide4sense --out data/l4s --verify-only
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import mlflow

from common.cli import UserError, add_common_args, csv_list, errors_message, print_summary, progress_printer, run_main
from common.seed import seed_everything
from common.tracking import set_run_kind, setup_tracking, tracked_run
from imagery.data.fetch import DATASETS, all_parts, check_parts, default_url, fetch, verify

EXPERIMENT = "fetch-dataset"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.fetch_dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", choices=DATASETS, help="which dataset")
    p.add_argument("--out", required=True, help="dataset folder (what train_imagery --data reads)")
    p.add_argument(
        "--parts",
        type=csv_list,
        default=None,
        help="comma-separated parts (landslide4sense: "
        + ",".join(all_parts("landslide4sense"))
        + "; sen12landslides: "
        + ",".join(all_parts("sen12landslides"))
        + "; default all)",
    )
    p.add_argument("--url", default=None, help="base URL of the host or a mirror (default: the official host)")
    p.add_argument("--resume", action="store_true", help="continue partial downloads left by a killed run")
    p.add_argument("--verify-only", action="store_true", help="check a fetched folder (sizes, checksums); no network")
    p.add_argument("--lock", default=None, help="lock file of first-download checksums (default OUT/.fetch/...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    log = progress_printer(args.json)
    if args.verify_only:
        problems = verify(args.dataset, out, lock_path=args.lock)
        if problems:
            raise UserError(errors_message(problems, str(out)))
        print_summary({"dataset": args.dataset, "out": str(out), "verified": "ok"}, as_json=args.json)
        return 0
    parts = check_parts(args.dataset, args.parts)
    seed_everything(args.seed)
    setup_tracking(args.tracking_uri, verbose=args.verbose)
    config = {**vars(args), "parts": parts, "url": args.url or default_url(args.dataset)}
    with tracked_run(args.experiment or EXPERIMENT, config, run_name=args.run_name) as run:
        set_run_kind("fetch")
        report = fetch(
            args.dataset,
            out,
            parts=parts,
            base_url=args.url,
            resume=args.resume,
            lock_path=args.lock,
            progress=not args.no_progress,
            log=log,
        )
        for note in report.notes:
            log(f"note: {note}")
        mlflow.log_metric("bytes", float(report.bytes_total))
        mlflow.log_artifact(str(out / ".fetch" / f"{args.dataset}.json"))
    summary = {
        "run_id": run.info.run_id,
        "dataset": args.dataset,
        "out": str(out),
        "files": len(report.files),
        "bytes": report.bytes_total,
        "folders": report.folders,
    }
    print_summary(summary, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
