"""The report of a large-table training run, the same for every engine.

:func:`log_cv_results` logs the out-of-fold results (per-fold and pooled metrics, the max-F1 threshold,
reliability table and plot, ``oof_predictions.parquet``); :func:`finish_training` turns the refitted
Booster into the prior-corrected :class:`tabular.model.LandslideClassifier` and logs it with SHAP;
:func:`sample_rows` draws the SHAP / signature row sample.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa

from common.metrics import METRIC_NAMES, best_f1_threshold, binary_metrics
from tabular.calibration import correct_prior, odds_factor, reliability_table, save_reliability_plot
from tabular.config import TrainTabularConfig
from tabular.explain import global_importance, save_summary_plot
from tabular.large.plan import TablePlan
from tabular.large.source import TableSource, column_numpy
from tabular.model import LandslideClassifier
from tabular.results import TabularTrainResult
from tabular.serving import log_tabular_model


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux ``ru_maxrss``, which sees C allocations)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def log_frame(df: pd.DataFrame, folder: Path, name: str) -> None:
    path = folder / name
    if name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    mlflow.log_artifact(str(path))


def log_cv_results(
    plan: TablePlan,
    oof: np.ndarray,
    fold_rows: list[dict[str, Any]],
    tmp: Path,
    *,
    title: str,
    oof_max_rows: int,
) -> tuple[float, dict[str, float]]:
    """Log the out-of-fold results of either engine; return the max-F1 threshold and the mean/std summary.

    ``fold_rows``: one dict per fold (``fold``, counts, ``best_iteration``), completed with the fold's
    metrics into ``cv_fold_metrics.csv`` and logged as ``fold_<metric>`` at step = fold; then the
    ``<metric>_mean``/``_std`` and ``pooled_<metric>`` metrics, the reliability table and plot
    (``title``) and, up to ``oof_max_rows`` rows, ``oof_predictions.parquet``.
    """
    y, fold = plan.y, plan.fold
    threshold = best_f1_threshold(y, oof)
    fm = pd.DataFrame(
        [row | binary_metrics(y[fold == i], oof[fold == i], threshold) for i, row in enumerate(fold_rows)]
    )
    summary: dict[str, float] = {}
    for name in METRIC_NAMES:
        summary[f"{name}_mean"] = float(fm[name].mean())
        summary[f"{name}_std"] = float(fm[name].std(ddof=1)) if len(fm) > 1 else 0.0
    for row in fm.itertuples(index=False):
        mlflow.log_metrics({f"fold_{m}": float(getattr(row, m)) for m in METRIC_NAMES}, step=int(row.fold))
        mlflow.log_metric("fold_best_iteration", float(row.best_iteration), step=int(row.fold))
    mlflow.log_metrics(summary | binary_metrics(y, oof, threshold, prefix="pooled_"))
    log_frame(fm, tmp, "cv_fold_metrics.csv")
    rel = reliability_table(y, oof)
    log_frame(rel, tmp, "calibration.csv")
    save_reliability_plot(rel, tmp / "reliability.png", title=title)
    mlflow.log_artifact(str(tmp / "reliability.png"))
    n = len(y)
    if n <= oof_max_rows:
        oof_df = pd.DataFrame({"row": np.arange(n), "y_true": y, "p_oof": oof, "fold": fold})
        if plan.coords:
            xy = plan.source.read_columns(list(plan.coords))
            oof_df.insert(1, plan.coords[0], xy[plan.coords[0]])
            oof_df.insert(2, plan.coords[1], xy[plan.coords[1]])
        log_frame(oof_df, tmp, "oof_predictions.parquet")
    else:
        mlflow.log_param("oof_artifact", f"skipped: {n} rows > oof_max_rows {oof_max_rows}")
    return threshold, summary


def finish_training(
    cfg: TrainTabularConfig,
    plan: TablePlan,
    booster: lgb.Booster,
    tmp: Path,
    *,
    threshold: float,
    best_iteration: int,
    scale_pos_weight: float,
    train_rate: float,
    shap_sample: pd.DataFrame,
    summary: dict[str, float],
    start: float,
    metrics: dict[str, float],
) -> TabularTrainResult:
    """The refitted ``booster`` as a prior-corrected model, logged with SHAP, in either engine.

    ``threshold`` (chosen on the table's prior) is moved to the population's; the odds factor folds in
    the class weight, the training subsample rate and the table's own sampling. ``metrics`` are logged
    with the threshold, ``train_seconds`` (since ``start``) and ``peak_rss_mb``.
    """
    factor = odds_factor(1.0, scale_pos_weight) * train_rate * plan.table_negative_rate
    threshold_pop = float(correct_prior(np.float64(threshold), plan.table_negative_rate))
    meta = {
        "feature_names": plan.features,
        "categorical_levels": plan.levels,
        "threshold": threshold_pop,
        "best_iteration": best_iteration,
        "scale_pos_weight": scale_pos_weight,
        "target": plan.target,
        "positive_label": str(cfg.positive) if cfg.positive is not None else "1",
        "seed": cfg.seed,
        "prior_odds_factor": factor,
    }
    model = LandslideClassifier.from_booster(booster, meta, params=cfg.lgbm)
    mlflow.log_params(
        {
            "prior_odds_factor": factor,
            "train_negative_rate": train_rate,
            "prior_correction": "p = f p_s / (f p_s + 1 - p_s), f = table_negative_rate * "
            "train_negative_rate / scale_pos_weight",
        }
    )
    importance = global_importance(model, shap_sample)
    log_frame(importance, tmp, "shap_importance.csv")
    save_summary_plot(model, shap_sample, tmp / "shap_summary.png")
    mlflow.log_artifact(str(tmp / "shap_summary.png"))
    info = log_tabular_model(model, shap_sample)
    elapsed = time.perf_counter() - start
    mlflow.log_metrics({"threshold": threshold_pop, **metrics, "train_seconds": elapsed, "peak_rss_mb": peak_rss_mb()})
    return TabularTrainResult.of_run(
        mlflow.active_run().info.run_id,
        logged_model_uri=info.model_uri,
        summary=summary,
        threshold=threshold_pop,
        importance=importance,
        n_folds=cfg.cv.n_folds,
        seconds=elapsed,
    )


def sample_indices(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 104729)
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


def sample_rows(src: TableSource, plan: TablePlan, k: int, seed: int) -> pd.DataFrame:
    """``k`` random rows of the raw feature columns as a DataFrame (for SHAP and the model signature)."""
    want = sample_indices(src.num_rows, k, seed)
    parts = []
    start = 0
    for batch in src.batches(plan.features):
        m = batch.num_rows
        lo, hi = np.searchsorted(want, [start, start + m])
        if hi > lo:
            parts.append(batch.take(pa.array(want[lo:hi] - start)))
        start += m
    return batches_to_frame(parts, plan.features)


def batches_to_frame(parts: list[pa.RecordBatch], features: list[str]) -> pd.DataFrame:
    table = pa.Table.from_batches(parts)
    return pd.DataFrame({name: column_numpy(table.column(name)) for name in features})
