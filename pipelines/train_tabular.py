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
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from common.atomic import atomic_write
from common.cli import add_common_args, positive_int, run_main
from common.fingerprint import fingerprint_dataframe
from common.tracking import log_fingerprint, setup_tracking, tracked_run
from tabular.config import CVConfig, LGBMParams, TrainTabularConfig
from tabular.metrics import METRIC_NAMES


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.train_tabular", description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="CSV or Parquet region table (default: built-in synthetic table)")
    p.add_argument("--target", default="landslide", help="label column: 0/1, true/false or two labels (default %(default)s)")
    p.add_argument("--positive", default=None, help="value of --target that means landslide (when not 0/1 or true/false)")
    p.add_argument("--drop", type=_csv_list, default=[], help="comma-separated id/coordinate columns to ignore")
    p.add_argument("--categorical", type=_csv_list, default=None, help="comma-separated categorical columns (default: text/category columns)")
    p.add_argument("--group", default=None, help="column for grouped (spatial) CV: a group never sits on both sides of a split")
    p.add_argument("--id-column", default=None, help="region id column (default: region_id if present, else the row number)")
    p.add_argument("--folds", type=positive_int, default=5, help="CV folds (default %(default)s)")
    p.add_argument("--n-regions", type=positive_int, default=4000, help="rows of the synthetic table when --data is omitted")
    p.add_argument("--top-k", type=positive_int, default=3, help="SHAP reasons per region in explanations.csv")
    p.add_argument("--learning-rate", type=float, default=LGBMParams.learning_rate)
    p.add_argument("--num-leaves", type=positive_int, default=LGBMParams.num_leaves)
    p.add_argument("--max-rounds", type=positive_int, default=LGBMParams.num_boost_round, help="max boosting rounds")
    p.add_argument("--early-stopping", type=int, default=LGBMParams.early_stopping_rounds, help="patience in rounds (0: off)")
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


def _load(cfg: TrainTabularConfig) -> tuple[pd.DataFrame, str]:
    from tabular.data import load_table
    from tabular.synthetic import make_region_table

    if cfg.data is None:
        return make_region_table(cfg.n_regions, seed=cfg.seed), f"synthetic:make_region_table(n={cfg.n_regions},seed={cfg.seed})"
    return load_table(cfg.data), str(cfg.data)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as fh:
        df.to_csv(fh, index=False)


def train(cfg: TrainTabularConfig, log: Callable[[str], None] = print) -> dict[str, object]:
    """Run the whole training job inside an MLflow run; returns a summary dict (run_id, metrics, ...)."""
    import mlflow

    from tabular.cv import cross_validate
    from tabular.data import prepare_training_table
    from tabular.explain import global_importance, save_summary_plot
    from tabular.model import LandslideClassifier
    from tabular.serving import log_tabular_model

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = setup_tracking(cfg.tracking_uri)
    start = time.perf_counter()
    with tracked_run(cfg.experiment, cfg, run_name=cfg.run_name, tracking_uri=uri) as run:
        df, source = _load(cfg)
        log_fingerprint(fingerprint_dataframe(df, source=source))
        drop = list(cfg.drop)
        if cfg.data is None:
            drop += [c for c in ("lon", "lat") if c not in drop]
        table = prepare_training_table(
            df,
            cfg.target,
            positive=cfg.positive,
            drop=drop,
            categorical=cfg.categorical,
            group=cfg.group,
            id_column=cfg.id_column,
            source=source,
        )
        n_pos = int(table.y.sum())
        log(
            f"data: {len(table.y)} rows, {table.X.shape[1]} features ({len(table.categorical)} categorical), "
            f"{n_pos} positive ({n_pos / len(table.y):.1%}); {cfg.cv.n_folds}-fold "
            f"{'grouped by ' + cfg.group if cfg.group else 'stratified'} CV"
        )
        mlflow.log_params({"n_features": table.X.shape[1], "n_positive": n_pos, "features": ",".join(table.X.columns)[:6000]})
        res = cross_validate(
            table.X,
            table.y,
            params=cfg.lgbm,
            categorical=table.categorical,
            n_folds=cfg.cv.n_folds,
            groups=table.groups,
            seed=cfg.seed,
            progress=log,
        )
        for row in res.fold_metrics.itertuples(index=False):
            mlflow.log_metrics({f"fold_{m}": float(getattr(row, m)) for m in METRIC_NAMES}, step=int(row.fold))
            mlflow.log_metric("fold_best_iteration", float(row.best_iteration), step=int(row.fold))
        mlflow.log_metrics(res.summary)
        mlflow.log_metrics({"threshold": res.threshold, "final_num_rounds": res.mean_best_iteration})
        if res.unseen_levels:
            mlflow.log_metric("cv_unseen_category_values", res.unseen_levels)

        log(f"refit on all {len(table.y)} rows with {res.mean_best_iteration} rounds (mean best iteration)")
        model = LandslideClassifier(
            cfg.lgbm,
            seed=cfg.seed,
            categorical=table.categorical,
            target=cfg.target,
            positive_label=str(cfg.positive) if cfg.positive is not None else "1",
        )
        model.fit(table.X, table.y, num_boost_round=res.mean_best_iteration)
        model.threshold_ = res.threshold

        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            id_name = table.id_column or "region_id"
            oof = pd.DataFrame({"region_id": table.ids, "y_true": table.y, "p_oof": res.oof, "fold": res.fold})
            _write_csv(oof, tmp / "oof_predictions.csv")
            _write_csv(res.fold_metrics, tmp / "cv_fold_metrics.csv")
            importance = global_importance(model, table.X)
            _write_csv(importance, tmp / "shap_importance.csv")
            save_summary_plot(model, table.X, tmp / "shap_summary.png")
            reasons = model.explain(table.X, top_k=cfg.top_k)
            reasons.insert(0, id_name, table.ids)
            _write_csv(reasons, tmp / "explanations.csv")
            info = log_tabular_model(model, table.X)
            for name in ("oof_predictions.csv", "cv_fold_metrics.csv", "shap_importance.csv", "shap_summary.png", "explanations.csv"):
                mlflow.log_artifact(str(tmp / name))
        elapsed = time.perf_counter() - start
        mlflow.log_metric("train_seconds", elapsed)
        return {
            "run_id": run.info.run_id,
            "experiment": cfg.experiment,
            "tracking_uri": uri,
            "model_uri": f"runs:/{run.info.run_id}/model",
            "logged_model_uri": info.model_uri,
            "summary": res.summary,
            "threshold": res.threshold,
            "top_features": importance["feature"].head(5).tolist(),
            "seconds": elapsed,
            "n_folds": cfg.cv.n_folds,
        }


def format_result(result: dict[str, object]) -> str:
    """The short result table printed at the end of a run."""
    summary = result["summary"]
    assert isinstance(summary, dict)
    lines = ["", f"metric      mean ± std over {result['n_folds']} folds (out-of-fold)", "---------   ----------------"]
    for m in METRIC_NAMES:
        lines.append(f"{m:<11} {summary[f'{m}_mean']:.3f} ± {summary[f'{m}_std']:.3f}")
    lines += [
        f"threshold   {result['threshold']:.3f} (max F1 on out-of-fold probabilities)",
        f"top SHAP    {', '.join(result['top_features'])}",  # type: ignore[arg-type]
        "",
        f"run {result['run_id']} in experiment {result['experiment']!r} at {result['tracking_uri']} ({result['seconds']:.0f}s)",
        f"model: {result['model_uri']}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    result = train(cfg, log=lambda line: print(line, flush=True))
    print(format_result(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
