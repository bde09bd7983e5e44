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

import argparse
import sys
from collections.abc import Callable, Sequence

from common.cli import (
    add_common_args,
    csv_list,
    non_negative_int,
    positive_int,
    print_summary,
    progress_printer,
    run_main,
)
from common.metrics import METRIC_NAMES
from common.tracking import setup_tracking, tracked_run
from pipelines._register import add_register_args, register_trained
from tabular.config import DEFAULT_BLOCK_SIZE_M, CVConfig, LGBMParams, ScaleConfig, TrainTabularConfig
from tabular.large import train as train_model
from tabular.results import TabularTrainResult


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.train_tabular", description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="CSV or Parquet region table (default: built-in synthetic table)")
    p.add_argument(
        "--target", default="landslide", help="label column: 0/1, true/false or two labels (default %(default)s)"
    )
    p.add_argument(
        "--positive", default=None, help="value of --target that means landslide (when not 0/1 or true/false)"
    )
    p.add_argument("--drop", type=csv_list, default=[], help="comma-separated id/coordinate columns to ignore")
    p.add_argument(
        "--categorical",
        type=csv_list,
        default=None,
        help="comma-separated categorical columns (default: text/category columns)",
    )
    p.add_argument(
        "--group", default=None, help="column for grouped (spatial) CV: a group never sits on both sides of a split"
    )
    p.add_argument(
        "--id-column", default=None, help="region id column (default: region_id if present, else the row number)"
    )
    p.add_argument(
        "--folds", type=non_negative_int, default=5, help="CV folds (default %(default)s; 0: no CV, large tables only)"
    )
    p.add_argument(
        "--cv",
        choices=["auto", "stratified", "group", "spatial"],
        default="auto",
        help="fold scheme; auto (default): group with --group, else spatial when x/y columns exist, else stratified",
    )
    p.add_argument(
        "--block-size",
        type=float,
        default=DEFAULT_BLOCK_SIZE_M,
        metavar="METRES",
        help="side of the square blocks of spatial CV, in metres (default %(default)s)",
    )
    p.add_argument(
        "--xy",
        type=csv_list,
        default=None,
        metavar="X,Y",
        help="coordinate columns for spatial CV (default x,y; lon/lat degrees are mapped to metres)",
    )
    p.add_argument(
        "--imbalance",
        choices=["weights", "subsample", "none"],
        default="none",
        help="large tables: none (default), class weights n_neg/n_pos, or negative subsampling; probabilities "
        "are prior-corrected",
    )
    p.add_argument(
        "--negatives-per-positive",
        type=float,
        default=ScaleConfig.negatives_per_positive,
        help="with --imbalance subsample: negatives kept per positive (default %(default)s)",
    )
    p.add_argument("--tune", type=non_negative_int, default=0, metavar="N", help="Optuna trials per CV fold (0: off)")
    p.add_argument(
        "--engine", choices=["local", "dask"], default="local", help="large tables: stream locally or train on Dask"
    )
    p.add_argument("--scheduler", default=None, help="with --engine dask: scheduler address (default: a local cluster)")
    p.add_argument(
        "--batch-rows", type=positive_int, default=ScaleConfig.batch_rows, help="large tables: rows read per batch"
    )
    p.add_argument(
        "--n-regions", type=positive_int, default=4000, help="rows of the synthetic table when --data is omitted"
    )
    p.add_argument("--top-k", type=positive_int, default=3, help="SHAP reasons per region in explanations.csv")
    p.add_argument("--learning-rate", type=float, default=LGBMParams.learning_rate)
    p.add_argument("--num-leaves", type=positive_int, default=LGBMParams.num_leaves)
    p.add_argument("--max-rounds", type=positive_int, default=LGBMParams.num_boost_round, help="max boosting rounds")
    p.add_argument(
        "--early-stopping", type=int, default=LGBMParams.early_stopping_rounds, help="patience in rounds (0: off)"
    )
    p.add_argument("--class-balance", choices=["scale_pos_weight", "none"], default=LGBMParams.class_balance)
    add_register_args(p, "tabular")
    add_common_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainTabularConfig:
    return TrainTabularConfig(
        data=args.data,
        target=args.target,
        positive=args.positive,
        drop=args.drop,
        categorical=args.categorical,
        group=args.group,
        id_column=args.id_column,
        n_regions=args.n_regions,
        top_k=args.top_k,
        seed=args.seed,
        experiment=args.experiment or "train_tabular",
        run_name=args.run_name,
        tracking_uri=args.tracking_uri,
        cv=CVConfig(n_folds=args.folds, mode=args.cv, block_size_m=args.block_size, coords=args.xy),
        lgbm=LGBMParams(
            learning_rate=args.learning_rate,
            num_leaves=args.num_leaves,
            num_boost_round=args.max_rounds,
            early_stopping_rounds=args.early_stopping,
            class_balance=args.class_balance,
        ),
        scale=ScaleConfig(
            engine=args.engine,
            scheduler=args.scheduler,
            batch_rows=args.batch_rows,
            imbalance=args.imbalance,
            negatives_per_positive=args.negatives_per_positive,
            tune_trials=args.tune,
        ),
    )


def train(cfg: TrainTabularConfig, log: Callable[[str], None] = print, *, verbose: bool = False) -> TabularTrainResult:
    """Set up the store, open the run and train (:func:`tabular.large.train` picks the path)."""
    setup_tracking(cfg.tracking_uri, verbose=verbose)
    with tracked_run(cfg.experiment, cfg, run_name=cfg.run_name):
        return train_model(cfg, log=log)


def format_result(result: TabularTrainResult, experiment: str) -> str:
    """The short result table printed at the end of a run."""
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    log = progress_printer(args.json)
    result = train(cfg, log=log, verbose=args.verbose)
    if not args.json:
        print(format_result(result, cfg.experiment), flush=True)
    means = {f"{m}_mean": result.summary[f"{m}_mean"] for m in METRIC_NAMES}
    out = {"run_id": result.run_id, "model_uri": result.model_uri, "threshold": result.threshold, "metrics": means}
    if not args.no_register:
        out["registered"] = register_trained(
            "tabular",
            result.logged_model_uri or result.model_uri,
            name=args.register_name,
            card_run_id=result.run_id,
            data_name=cfg.data or f"built-in synthetic region table ({cfg.n_regions} rows, seed {cfg.seed})",
            data_kind="real" if cfg.data else "synthetic",
            metrics=result.summary,
            protocol=f"{result.n_folds}-fold cross-validation, out-of-fold scores",
            threshold=result.threshold,
            log=log,
        )
    print_summary(out, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
