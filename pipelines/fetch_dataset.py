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

from dataclasses import dataclass
from pathlib import Path

from common.cli import RunOptions, UserError, errors_message
from common.options import arg, nested, to_dict
from imagery.data.fetch import DatasetName, all_parts, check_parts, default_url
from pipelines._command import Command, Context

EXPERIMENT = "fetch-dataset"


@dataclass
class FetchDatasetOptions:
    """The arguments of ``python -m pipelines.fetch_dataset`` (logged as the run's ``config.json``)."""

    dataset: DatasetName = arg("which dataset", positional=True)
    out: str = arg("dataset folder (what train_imagery --data reads)")
    parts: list[str] | None = arg(
        "comma-separated parts (landslide4sense: "
        + ",".join(all_parts("landslide4sense"))
        + "; sen12landslides: "
        + ",".join(all_parts("sen12landslides"))
        + "; default all)",
        default=None,
    )
    url: str | None = arg("base URL of the host or a mirror (default: the official host)", default=None)
    resume: bool = arg("continue partial downloads left by a killed run", default=False)
    verify_only: bool = arg("check a fetched folder (sizes, checksums); no network, no MLflow run", default=False)
    lock: str | None = arg("lock file of first-download checksums (default OUT/.fetch/...)", default=None)
    progress: bool = arg("progress bar (default on)", default=True)
    run: RunOptions = nested(RunOptions)


def logged(o: FetchDatasetOptions, ctx: Context) -> dict[str, object]:
    """The run's params: the options with the parts and the URL resolved."""
    out = Path(o.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    return {**to_dict(o), "parts": check_parts(o.dataset, o.parts), "url": o.url or default_url(o.dataset)}


def run(o: FetchDatasetOptions, ctx: Context) -> dict[str, object]:
    """Fetch (:func:`imagery.data.fetch.fetch`), or with ``--verify-only`` check a fetched folder."""
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.tracking import set_run_kind  # noqa: PLC0415 - MLflow loads when the command runs
    from imagery.data.fetch import fetch, verify  # noqa: PLC0415 - loaded when the command runs

    out = Path(o.out)
    if o.verify_only:
        problems = verify(o.dataset, out, lock_path=o.lock)
        if problems:
            raise UserError(errors_message(problems, str(out)))
        return {"dataset": o.dataset, "out": str(out), "verified": "ok"}
    set_run_kind("fetch")
    report = ctx.result = fetch(
        o.dataset,
        out,
        parts=ctx.config["parts"],
        base_url=o.url,
        resume=o.resume,
        lock_path=o.lock,
        progress=o.progress,
        log=ctx.log,
    )
    for note in report.notes:
        ctx.log(f"note: {note}")
    state = out / ".fetch" / f"{o.dataset}.json"
    mlflow.log_metric("bytes", float(report.bytes_total))
    mlflow.log_artifact(str(state))
    return {
        "dataset": o.dataset,
        "out": str(out),
        "files": report.files,
        "lock_file": str(state),
        "bytes": report.bytes_total,
        "folders": report.folders,
    }


COMMAND = Command(
    "fetch_dataset",
    FetchDatasetOptions,
    run,
    doc=__doc__,
    experiment=EXPERIMENT,
    prepare=logged,
    tracked=lambda o: not o.verify_only,
)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
