"""``python -m pipelines.study_tables``: the seed study's deck tables beside ours (study protocol and honest).

Reads the finished ``train_imagery`` runs tagged with ``--study-row`` from MLflow (``--experiment``, default
``imagery-train``), prints every deck table (losses, channel sets, heads, backbones, small models, optimisers,
post-processing, 5 folds) as Markdown with the deck's numbers, ours under ``--protocol study`` and ours under the
honest protocol, ``not run`` where a row has no run; writes the same Markdown to ``--out`` and logs it in a run of
that experiment. ``--plan`` writes the commands of every row for one GPU with their expected times instead.

Examples::

    python -m pipelines.study_tables                               # print, write study_tables.md, log
    python -m pipelines.study_tables --experiment study --out results/study_tables.md
    python -m pipelines.study_tables --plan benchmarks/study_plan.md --data /data/L4S
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import RunOptions
from common.options import arg, nested
from pipelines._command import Command, Context

if TYPE_CHECKING:
    from imagery.training.study_tables import TableResults

ARTIFACT = "study_tables.md"
#: the experiment the training runs go to (imagery.training.study_tables.DEFAULT_EXPERIMENT)
EXPERIMENT = "imagery-train"


@dataclass
class StudyTablesOptions:
    """The flags of ``python -m pipelines.study_tables``."""

    out: str = arg(f"Markdown file to write (default {ARTIFACT})", default=ARTIFACT)
    plan: str | None = arg(
        "write the plan (every row's commands and expected times) here instead (default benchmarks/study_plan.md)",
        default=None,
        nargs="?",
        const="benchmarks/study_plan.md",
    )
    data: str = arg("--plan: the data path written into the commands (default L4S)", default="L4S")
    no_log: bool = arg("do not log the tables to MLflow", default=False)
    run: RunOptions = nested(RunOptions)


def tables(o: StudyTablesOptions, ctx: Context) -> dict[str, object]:
    """Print and write the tables (or the plan); ``ctx.result``: the collected results (``None`` for ``--plan``)."""
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.atomic import atomic_write  # noqa: PLC0415 - loaded when the command runs
    from common.tracking import set_run_kind, setup_tracking  # noqa: PLC0415 - MLflow loads when the command runs
    from imagery.training.study_tables import collect_results, plan_markdown, render_markdown  # noqa: PLC0415

    if o.plan:
        text = plan_markdown(o.data, o.run.experiment)
        with atomic_write(o.plan) as fh:
            fh.write(text)
        return {
            "plan": str(Path(o.plan)),
            "commands": text.count("python -m pipelines.train_imagery"),
            "files": [str(Path(o.plan))],
        }
    uri = ctx.tracking_uri or setup_tracking(o.run.tracking_uri, verbose=o.run.verbose)
    experiment = o.run.experiment or EXPERIMENT
    results = ctx.result = collect_results(experiment, uri)
    text = render_markdown(results)
    ctx.log(text)
    with atomic_write(o.out) as fh:
        fh.write(text)
    if ctx.run is not None:
        set_run_kind("study-tables")
        mlflow.log_text(text, ARTIFACT)
        mlflow.log_metric("rows_run", float(len(results.found)))
    return {
        "run_id": ctx.run_id or "",
        "out": str(Path(o.out)),
        "rows_with_runs": len(results.found),
        "experiment": experiment,
        "files": [str(Path(o.out))],
    }


COMMAND = Command(
    "study_tables",
    StudyTablesOptions,
    tables,
    doc=__doc__,
    experiment=EXPERIMENT,
    tracked=lambda o: not o.plan and not o.no_log,
)
main = COMMAND.main


def run(argv: Sequence[str] | None = None) -> TableResults | None:
    """Print and write the tables (or the plan); returns the collected results (``None`` for ``--plan``)."""
    return COMMAND.call(list(argv or []))


if __name__ == "__main__":
    COMMAND.exit()
