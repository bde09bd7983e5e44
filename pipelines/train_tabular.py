"""Train the tabular landslide classifier: k-fold CV, OOF threshold, refit, SHAP, MLflow.

``python -m pipelines.train_tabular`` without flags trains on the built-in synthetic region table
(:func:`tabular.synthetic.make_region_table`). Logged to MLflow: the config, data fingerprint, git
commit, per-fold metrics (``fold_<metric>`` at step = fold) and their ``<metric>_mean``/``_std``,
the decision threshold, the refitted model (a pyfunc taking level names, :mod:`tabular.pyfunc_model`,
with ``tabular_model.json``),
``oof_predictions.csv`` (region_id, y_true, p_oof, fold), ``cv_fold_metrics.csv``,
``shap_importance.csv``, ``shap_summary.png`` and ``explanations.csv`` (top-k reasons per region).

Large cell tables (``--data`` a Parquet dataset folder, hive-partitioned or not, or Arrow IPC
``.arrow``/``.feather`` files) are streamed into LightGBM without pandas (:mod:`tabular.large.local`), or
trained on a Dask cluster with ``--engine dask [--scheduler ADDRESS]`` (:mod:`tabular.large.dask_engine`);
:func:`tabular.large.train` picks the path.
Cross-validation is spatial (``--cv spatial --block-size METRES``) by default when the table has
``x``/``y`` columns and no ``--group`` is given; ``--tune N`` runs an Optuna search inside every fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from common.cli import RunOptions, non_negative_int, positive_int
from common.options import arg, nested
from pipelines._command import Command, Context
from pipelines._register import RegisterTabularOptions, register_trained
from tabular.config import DEFAULT_BLOCK_SIZE_M, CVConfig, LGBMParams, ScaleConfig, TrainTabularConfig

if TYPE_CHECKING:
    from tabular.results import TabularTrainResult

EXPERIMENT = "train_tabular"


@dataclass
class CVOptions:
    """cross-validation"""

    folds: int = arg("CV folds (default %(default)s; 0: no CV, large tables only)", default=5, type=non_negative_int)
    cv: Literal["auto", "stratified", "group", "spatial"] = arg(
        "fold scheme; auto (default): group with --group, else spatial when x/y columns exist, else stratified",
        default="auto",
    )
    block_size: float = arg(
        "side of the square blocks of spatial CV, in metres (default %(default)s)",
        default=DEFAULT_BLOCK_SIZE_M,
        metavar="METRES",
    )
    xy: list[str] | None = arg(
        "coordinate columns for spatial CV (default x,y; lon/lat degrees are mapped to metres)",
        default=None,
        metavar="X,Y",
    )


@dataclass
class LGBMOptions:
    """LightGBM"""

    learning_rate: float = arg("shrinkage per boosting round", default=LGBMParams.learning_rate)
    num_leaves: int = arg("maximum leaves per tree", default=LGBMParams.num_leaves, type=positive_int)
    max_rounds: int = arg("max boosting rounds", default=LGBMParams.num_boost_round, type=positive_int)
    early_stopping: int = arg("patience in rounds (0: off)", default=LGBMParams.early_stopping_rounds)
    class_balance: Literal["scale_pos_weight", "none"] = arg(
        "scale_pos_weight weights positives by n_neg/n_pos; none leaves them", default=LGBMParams.class_balance
    )


@dataclass
class ScaleOptions:
    """large tables (Parquet dataset folders, Arrow IPC files)"""

    imbalance: Literal["weights", "subsample", "none"] = arg(
        "none (default), class weights n_neg/n_pos, or negative subsampling; probabilities are prior-corrected",
        default="none",
    )
    negatives_per_positive: float = arg(
        "with --imbalance subsample: negatives kept per positive (default %(default)s)",
        default=ScaleConfig.negatives_per_positive,
    )
    tune: int = arg("Optuna trials per CV fold (0: off)", default=0, type=non_negative_int, metavar="N")
    engine: Literal["local", "dask"] = arg("stream locally or train on Dask", default="local")
    scheduler: str | None = arg("with --engine dask: scheduler address (default: a local cluster)", default=None)
    batch_rows: int = arg("rows read per batch", default=ScaleConfig.batch_rows, type=positive_int)


@dataclass
class TrainTabularOptions:
    """The flags of ``python -m pipelines.train_tabular`` (logged as the run's ``config.json``)."""

    data: str | None = arg("CSV or Parquet region table (default: built-in synthetic table)", default=None)
    target: str = arg("label column: 0/1, true/false or two labels (default %(default)s)", default="landslide")
    positive: str | None = arg("value of --target that means landslide (when not 0/1 or true/false)", default=None)
    drop: list[str] = arg("comma-separated id/coordinate columns to ignore", default_factory=list)
    categorical: list[str] | None = arg(
        "comma-separated categorical columns (default: text/category columns)", default=None
    )
    group: str | None = arg(
        "column for grouped (spatial) CV: a group never sits on both sides of a split", default=None
    )
    id_column: str | None = arg("region id column (default: region_id if present, else the row number)", default=None)
    n_regions: int = arg("rows of the synthetic table when --data is omitted", default=4000, type=positive_int)
    top_k: int = arg("SHAP reasons per region in explanations.csv", default=3, type=positive_int)
    cv: CVOptions = nested(CVOptions)
    lgbm: LGBMOptions = nested(LGBMOptions)
    scale: ScaleOptions = nested(ScaleOptions)
    register: RegisterTabularOptions = nested(RegisterTabularOptions)
    run: RunOptions = nested(RunOptions)


def library_config(o: TrainTabularOptions) -> TrainTabularConfig:
    """The library's config for these options (what the run logs as params)."""
    return TrainTabularConfig(
        data=o.data,
        target=o.target,
        positive=o.positive,
        drop=o.drop,
        categorical=o.categorical,
        group=o.group,
        id_column=o.id_column,
        n_regions=o.n_regions,
        top_k=o.top_k,
        seed=o.run.seed,
        experiment=o.run.experiment or EXPERIMENT,
        run_name=o.run.run_name,
        tracking_uri=o.run.tracking_uri,
        cv=CVConfig(n_folds=o.cv.folds, mode=o.cv.cv, block_size_m=o.cv.block_size, coords=o.cv.xy),
        lgbm=LGBMParams(
            learning_rate=o.lgbm.learning_rate,
            num_leaves=o.lgbm.num_leaves,
            num_boost_round=o.lgbm.max_rounds,
            early_stopping_rounds=o.lgbm.early_stopping,
            class_balance=o.lgbm.class_balance,
        ),
        scale=ScaleConfig(
            engine=o.scale.engine,
            scheduler=o.scale.scheduler,
            batch_rows=o.scale.batch_rows,
            imbalance=o.scale.imbalance,
            negatives_per_positive=o.scale.negatives_per_positive,
            tune_trials=o.scale.tune,
        ),
    )


def format_result(result: TabularTrainResult, experiment: str) -> str:
    """The short result table printed at the end of a run."""
    from common.metrics import METRIC_NAMES  # noqa: PLC0415 - scikit-learn loads when the command runs

    summary = result.summary
    lines = ["", f"metric      mean ± std over {result.n_folds} folds (out-of-fold)", "---------   ----------------"]
    for m in METRIC_NAMES:
        lines.append(f"{m:<11} {summary[f'{m}_mean']:.3f} ± {summary[f'{m}_std']:.3f}")
    lines += [
        f"threshold   {result.threshold:.3f} (max F1 on out-of-fold probabilities)",
        f"top SHAP    {', '.join(result.top_features)}",
        "",
        f"run {result.run_id} in experiment {experiment!r} ({result.seconds:.0f}s)",
        f"model: {result.model_uri}",
    ]
    return "\n".join(lines)


def run(o: TrainTabularOptions, ctx: Context) -> dict[str, object]:
    """Train (:func:`tabular.large.train` picks the path), print the table, register the model."""
    from common.metrics import METRIC_NAMES  # noqa: PLC0415 - scikit-learn loads when the command runs
    from tabular.large import train as train_model  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    cfg: TrainTabularConfig = ctx.config
    result = ctx.result = train_model(cfg, log=ctx.log)
    ctx.say(format_result(result, cfg.experiment))
    means = {f"{m}_mean": result.summary[f"{m}_mean"] for m in METRIC_NAMES}
    return {"run_id": result.run_id, "model_uri": result.model_uri, "threshold": result.threshold, "metrics": means}


def register(o: TrainTabularOptions, ctx: Context, summary: dict[str, object]) -> None:
    """After the run: register the model with its card (unless --no-register)."""
    if o.register.no_register:
        return
    cfg: TrainTabularConfig = ctx.config
    result = ctx.result
    summary["registered"] = register_trained(
        "tabular",
        result.logged_model_uri or result.model_uri,
        name=o.register.register_name,
        card_run_id=result.run_id,
        data_name=cfg.data or f"built-in synthetic region table ({cfg.n_regions} rows, seed {cfg.seed})",
        data_kind="real" if cfg.data else "synthetic",
        metrics=result.summary,
        protocol=f"{result.n_folds}-fold cross-validation, out-of-fold scores",
        threshold=result.threshold,
        log=ctx.log,
    )


COMMAND = Command(
    "train_tabular",
    TrainTabularOptions,
    run,
    doc=__doc__,
    experiment=EXPERIMENT,
    prepare=lambda o, ctx: library_config(o),
    finish=register,
)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
