"""``python -m pipelines.train_fusion``: fit the stacking fuser on two runs' out-of-fold predictions.

Reads ``oof_predictions.csv`` (``region_id, y_true, p_oof, fold``) of a tabular run
(``pipelines.train_tabular``) and of an imagery run (``pipelines.train_imagery --folds k``), joins them
by ``region_id`` (every id must be in both unless ``--allow-partial``) and fits
:class:`fusion.stacking.StackingFuser` on them; in-sample predictions are never used.

Logged: the config, a fingerprint of the joined table, tags ``tabular_run_id``/``imagery_run_id``,
``fuser.json`` (the model; it records the tabular feature columns and the imagery channel set so
that scoring refuses models from other runs), ``reliability.png`` and Brier / ROC-AUC metrics of
each base model and of the fuser's own cross-validated predictions.

Example::

    python -m pipelines.train_fusion --tabular-run 3f2a... --imagery-run 9b1c...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common.cli import UserError, add_common_args, positive_int, print_summary, progress_printer, run_main
from common.model_card import SYNTHETIC_TAG
from common.tracking import setup_tracking, tracked_run
from fusion.config import TrainFusionConfig
from fusion.experiment import FusionTrainResult, train_fuser
from fusion.stacking import CALIBRATIONS
from pipelines._register import add_register_args, register_trained

EXPERIMENT = "train_fusion"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.train_fusion", description=__doc__.split("\n\n")[0])
    p.add_argument("--tabular-run", required=True, help="MLflow run id of a pipelines.train_tabular run")
    p.add_argument(
        "--imagery-run", required=True, help="MLflow run id of a pipelines.train_imagery run (with OOF predictions)"
    )
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic meta-model")
    p.add_argument(
        "--calibration",
        default="none",
        choices=CALIBRATIONS,
        help="extra calibration on top of the logistic meta-model (default none: the LR is itself calibrated)",
    )
    p.add_argument(
        "--cv", type=positive_int, default=5, help="folds of the fuser's own CV (threshold and reported metrics)"
    )
    p.add_argument(
        "--allow-partial", action="store_true", help="keep regions present in only one OOF table (fit fallbacks only)"
    )
    add_register_args(p, "fusion")
    add_common_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainFusionConfig:
    if not args.C > 0:
        raise UserError(f"--C must be > 0, got {args.C}")
    return TrainFusionConfig(
        tabular_run=args.tabular_run,
        imagery_run=args.imagery_run,
        C=args.C,
        calibration=args.calibration,
        cv=args.cv,
        allow_partial=args.allow_partial,
        seed=args.seed,
        experiment=args.experiment or EXPERIMENT,
        run_name=args.run_name,
        tracking_uri=args.tracking_uri,
    )


def train(cfg: TrainFusionConfig, log=print, *, verbose: bool = False) -> FusionTrainResult:
    """Set up the store, open the run and fit the fuser (:func:`fusion.experiment.train_fuser`)."""
    uri = setup_tracking(cfg.tracking_uri, verbose=verbose)
    with tracked_run(cfg.experiment, cfg, run_name=cfg.run_name):
        return train_fuser(cfg, tracking_uri=uri, log=log)


def register_fuser(result: FusionTrainResult, cfg: TrainFusionConfig, name: str, log=print) -> str:
    """Register the fuser (its run's artifacts: ``fuser.json`` and plots) with its model card; synthetic when
    either base model's run is tagged synthetic."""
    client = MlflowClient(mlflow.get_tracking_uri())
    kinds = []
    for run_id in (cfg.tabular_run, cfg.imagery_run):
        try:
            kinds.append(client.get_run(run_id).data.tags.get(SYNTHETIC_TAG))
        except MlflowException:
            kinds.append(None)
    data_kind = "synthetic" if "true" in kinds else "real" if kinds == ["false", "false"] else "unknown"
    return register_trained(
        "fusion",
        f"runs:/{result.run_id}",
        name=name,
        card_run_id=result.run_id,
        data_name=f"out-of-fold predictions of runs {cfg.tabular_run} (tabular) and {cfg.imagery_run} (imagery)",
        data_kind=data_kind,
        metrics=result.metrics,
        protocol=f"{cfg.cv}-fold cross-validation of the stacker on out-of-fold base predictions",
        log=log,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    result = train(cfg, log=progress_printer(args.json), verbose=args.verbose)
    summary = {"run_id": result.run_id, "fusion_model": result.fuser_uri, "metrics": result.metrics}
    if not args.no_register:
        summary["registered"] = register_fuser(result, cfg, args.register_name, log=progress_printer(args.json))
    print_summary(summary, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
