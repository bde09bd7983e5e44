"""Train the tabular landslide classifier: k-fold CV, OOF threshold, refit, SHAP, MLflow.

``python -m pipelines.train_tabular`` without flags trains on the built-in synthetic region table
(:func:`tabular.synthetic.make_region_table`). Logged to MLflow: the config, data fingerprint, git
commit, per-fold metrics (``fold_<metric>`` at step = fold) and their ``<metric>_mean``/``_std``,
the decision threshold, the refitted model (LightGBM flavour + ``tabular_model.json``),
``oof_predictions.csv`` (region_id, y_true, p_oof, fold), ``cv_fold_metrics.csv``,
``shap_importance.csv``, ``shap_summary.png`` and ``explanations.csv`` (top-k reasons per region).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from common.cli import add_common_args, csv_list, positive_int, print_summary, progress_printer, run_main
from common.metrics import METRIC_NAMES
from common.tracking import setup_tracking, tracked_run
from tabular.config import CVConfig, LGBMParams, TrainTabularConfig
from tabular.experiment import TabularTrainResult, train_tabular_model


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
    p.add_argument("--folds", type=positive_int, default=5, help="CV folds (default %(default)s)")
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
        cv=CVConfig(n_folds=args.folds),
        lgbm=LGBMParams(
            learning_rate=args.learning_rate,
            num_leaves=args.num_leaves,
            num_boost_round=args.max_rounds,
            early_stopping_rounds=args.early_stopping,
            class_balance=args.class_balance,
        ),
    )


def train(cfg: TrainTabularConfig, log: Callable[[str], None] = print, *, verbose: bool = False) -> TabularTrainResult:
    """Set up the store, open the run and train (:func:`tabular.experiment.train_tabular_model`)."""
    setup_tracking(cfg.tracking_uri, verbose=verbose)
    with tracked_run(cfg.experiment, cfg, run_name=cfg.run_name):
        return train_tabular_model(cfg, log=log)


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
    print_summary(
        {"run_id": result.run_id, "model_uri": result.model_uri, "threshold": result.threshold, "metrics": means},
        as_json=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
