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

from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.cli import RunOptions, UserError, positive_int
from common.options import arg, fill, nested
from fusion.choices import Calibration
from pipelines._command import Command, Context
from pipelines._register import RegisterFusionOptions, register_trained

if TYPE_CHECKING:
    from fusion.config import TrainFusionConfig
    from fusion.experiment import FusionTrainResult

EXPERIMENT = "train_fusion"


@dataclass
class TrainFusionOptions:
    """The flags of ``python -m pipelines.train_fusion`` (logged as the run's ``config.json``)."""

    tabular_run: str = arg("MLflow run id of a pipelines.train_tabular run")
    imagery_run: str = arg("MLflow run id of a pipelines.train_imagery run (with OOF predictions)")
    C: float = arg("inverse L2 strength of the logistic meta-model", default=1.0, flag="--C")
    calibration: Calibration = arg(
        "extra calibration on top of the logistic meta-model (default none: the LR is itself calibrated)",
        default="none",
    )
    cv: int = arg("folds of the fuser's own CV (threshold and reported metrics)", default=5, type=positive_int)
    allow_partial: bool = arg("keep regions present in only one OOF table (fit fallbacks only)", default=False)
    register: RegisterFusionOptions = nested(RegisterFusionOptions)
    run: RunOptions = nested(RunOptions)


def library_config(o: TrainFusionOptions, ctx: Context | None = None) -> TrainFusionConfig:
    """The library's config for these options (what the run logs as params)."""
    from fusion.config import TrainFusionConfig  # noqa: PLC0415 - pandas loads when the command runs

    if not o.C > 0:
        raise UserError(f"--C must be > 0, got {o.C}")
    return fill(TrainFusionConfig, o, o.run, experiment=o.run.experiment or EXPERIMENT)


def register_fuser(result: FusionTrainResult, cfg: TrainFusionConfig, name: str, log=print) -> str:
    """Register the fuser (its run's artifacts: ``fuser.json`` and plots) with its model card; synthetic when
    either base model's run is tagged synthetic."""
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - loaded when the command runs

    from common.model_card import SYNTHETIC_TAG  # noqa: PLC0415 - with the registry

    client = mlflow.MlflowClient(mlflow.get_tracking_uri())
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


def run(o: TrainFusionOptions, ctx: Context) -> dict[str, object]:
    """Fit the fuser (:func:`fusion.experiment.train_fuser`) and register it."""
    from fusion.experiment import train_fuser  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    result = ctx.result = train_fuser(ctx.config, tracking_uri=ctx.tracking_uri, log=ctx.log)
    return {"run_id": result.run_id, "fusion_model": result.fuser_uri, "metrics": result.metrics}


def register(o: TrainFusionOptions, ctx: Context, summary: dict[str, object]) -> None:
    """After the run: register the fuser (unless --no-register)."""
    if not o.register.no_register:
        summary["registered"] = register_fuser(ctx.result, ctx.config, o.register.register_name, log=ctx.log)


COMMAND = Command(
    "train_fusion",
    TrainFusionOptions,
    run,
    doc=__doc__,
    experiment=EXPERIMENT,
    prepare=library_config,
    finish=register,
)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
