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

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import add_common_args, print_summary, progress_printer, run_main

if TYPE_CHECKING:
    from imagery.training.study_tables import TableResults

ARTIFACT = "study_tables.md"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.study_tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=ARTIFACT, help=f"Markdown file to write (default {ARTIFACT})")
    p.add_argument(
        "--plan",
        nargs="?",
        const="benchmarks/study_plan.md",
        default=None,
        help="write the plan (every row's commands and expected times) here instead (default benchmarks/study_plan.md)",
    )
    p.add_argument("--data", default="L4S", help="--plan: the data path written into the commands (default L4S)")
    p.add_argument("--no-log", action="store_true", help="do not log the tables to MLflow")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    run(argv)
    return 0


def run(argv: Sequence[str] | None = None) -> TableResults | None:
    """Print and write the tables (or the plan); returns the collected results (``None`` for ``--plan``)."""
    args = build_parser().parse_args(argv)
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.atomic import atomic_write  # noqa: PLC0415 - loaded when the command runs
    from common.tracking import set_run_kind, setup_tracking, tracked_run  # noqa: PLC0415 - MLflow loads when the command runs
    from imagery.training.study_tables import (  # noqa: PLC0415 - loaded when the command runs: --help stays fast
        DEFAULT_EXPERIMENT,
        collect_results,
        plan_markdown,
        render_markdown,
    )

    say = progress_printer(args.json)
    if args.plan:
        text = plan_markdown(args.data, args.experiment)
        with atomic_write(args.plan) as fh:
            fh.write(text)
        print_summary(
            {"plan": str(Path(args.plan)), "commands": text.count("python -m pipelines.train_imagery")},
            as_json=args.json,
        )
        return None
    uri = setup_tracking(args.tracking_uri, verbose=args.verbose)
    experiment = args.experiment or DEFAULT_EXPERIMENT
    results = collect_results(experiment, uri)
    text = render_markdown(results)
    say(text)
    with atomic_write(args.out) as fh:
        fh.write(text)
    run_id = ""
    if not args.no_log:
        with tracked_run(experiment, run_name=args.run_name or "study-tables"):
            set_run_kind("study-tables")
            mlflow.log_text(text, ARTIFACT)
            mlflow.log_metric("rows_run", float(len(results.found)))
            run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    print_summary(
        {"run_id": run_id, "out": str(Path(args.out)), "rows_with_runs": len(results.found), "experiment": experiment},
        as_json=args.json,
    )
    return results


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
