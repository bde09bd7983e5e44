"""Training and scoring on cell tables too large for pandas (Parquet datasets, Arrow IPC), streamed.

:func:`train_dataset_model` (``train_tabular --data DIR|FILE.arrow``):

1. reads only the label, coordinate and group columns (and the categorical columns' levels);
2. makes the folds: spatial blocks (:mod:`tabular.spatial`, the default when x/y exist and no group
   column is given), a group column, or stratified;
3. bins the features once, streaming: a ``lightgbm.Sequence`` (:class:`tabular.dataset.TableSequence`)
   feeds LightGBM a row sample for the bin bounds, then every row, so peak memory is about LightGBM's
   binned matrix (about one byte per cell and feature) plus a few arrays of one value per row, never
   the raw table;
4. trains one model per fold on a *subset* of that binned matrix (early stopping on whole blocks held
   out of the training fold), optionally after an Optuna search nested in the fold
   (:mod:`tabular.tuning`), and predicts each fold's held-out rows in one more streaming pass;
5. balances the classes by weights or negative subsampling and prior-corrects the probabilities
   (:mod:`tabular.calibration`; the table's own sampling rate included), logs the Brier score and a
   reliability plot;
6. refits on every row with the mean best round count and logs the model in the same format as the
   in-memory path (:mod:`tabular.serving`), with SHAP on a row sample.

:func:`predict_dataset` (``predict_tabular --data DIR``) scores a table batch by batch into a Parquet
dataset (``x``, ``y`` when present, ``p_landslide``, ``label``), optionally compiled, and with
``raster_out`` writes the susceptibility GeoTIFF, classes and PNG (:mod:`tabular.susceptibility`).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import resource
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from common.cli import UserError
from common.fingerprint import Fingerprint
from common.metrics import METRIC_NAMES, best_f1_threshold, binary_metrics
from common.tracking import log_fingerprint
from tabular.calibration import correct_prior, odds_factor, reliability_table, save_reliability_plot
from tabular.config import PredictTabularConfig, TrainTabularConfig
from tabular.data import encode_target_array
from tabular.dataset import (
    FeatureEncoder,
    TableSequence,
    TableSource,
    atomic_dataset_dir,
    column_numpy,
    discover_levels,
)
from tabular.experiment import PredictTableResult, TabularTrainResult
from tabular.explain import global_importance, save_summary_plot
from tabular.model import LandslideClassifier
from tabular.serving import load_tabular_model, log_tabular_model
from tabular.spatial import (
    coords_to_metres,
    inner_block_split,
    looks_like_lonlat,
    make_blocks,
    resolve_cv_mode,
    spatial_fold_of_rows,
    stratified_fold_of_rows,
)

MAX_CATEGORICAL_LEVELS = 10_000


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux ``ru_maxrss``, which sees C allocations)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass(frozen=True)
class TablePlan:
    """What a training table resolved to: columns, labels, folds and sampling (one value per row arrays)."""

    source: TableSource
    target: str
    features: list[str]
    categorical: list[str]
    levels: dict[str, list[str]]
    coords: tuple[str, str] | None
    y: np.ndarray  # int8 (rows,)
    fold: np.ndarray | None  # int16 (rows,) or None without CV
    blocks: np.ndarray | None  # block/group id per row (for the inner split), or None
    cv_mode: str
    cv_reason: str
    n_blocks: int
    table_negative_rate: float


def _resolve_target(src: TableSource, cfg: TrainTabularConfig) -> str:
    if cfg.target in src.columns:
        return cfg.target
    if src.meta.target and src.meta.target in src.columns and cfg.target == "landslide":
        return src.meta.target
    raise UserError(f"{src.path}: target column {cfg.target!r} not found (columns: {src.columns[:25]})")


def _resolve_coords(src: TableSource, cfg: TrainTabularConfig) -> tuple[str, str] | None:
    if cfg.cv.coords:
        if len(cfg.cv.coords) != 2:
            raise UserError(f"--xy expects two column names X,Y, got {cfg.cv.coords}")
        src.require(cfg.cv.coords, "--xy column(s)")
        return (cfg.cv.coords[0], cfg.cv.coords[1])
    return src.coord_columns()


def plan_table(cfg: TrainTabularConfig) -> TablePlan:
    """Open the table, pick columns, read labels/coordinates and make the folds (no feature data read)."""
    src = TableSource(cfg.data)
    target = _resolve_target(src, cfg)
    coords = _resolve_coords(src, cfg)
    if cfg.group is not None:
        src.require([cfg.group], "--group column")
    src.require(cfg.drop, "--drop column(s)")
    mode, reason = resolve_cv_mode(cfg.cv.mode, coords is not None, cfg.group)
    non_features = {target, *cfg.drop, *src.partition_columns}
    if cfg.group:
        non_features.add(cfg.group)
    if cfg.id_column:
        non_features.add(cfg.id_column)
    if coords is not None:
        non_features.update(coords)  # coordinates are never features
    features = [c for c in src.columns if c not in non_features]
    if not features:
        raise UserError(f"{src.path}: no feature columns left after dropping target, coordinate and --drop columns")
    bad = [c for c in features if not (src.is_numeric(c) or src.is_textual(c))]
    if bad:
        raise UserError(
            f"{src.path}: column {bad[0]!r} has type {src.field(bad[0]).type} (expected numbers, classes or text); "
            "drop it with --drop"
        )
    if cfg.categorical is not None:
        src.require(cfg.categorical, "--categorical column(s)")
        categorical = [c for c in cfg.categorical if c in features]
    else:
        meta_cats = set(src.meta.categorical)
        categorical = [c for c in features if c in meta_cats or src.is_dictionary(c) or src.is_textual(c)]
    text_numeric = [c for c in features if src.is_textual(c) and c not in categorical]
    if text_numeric:
        raise UserError(f"{src.path}: text column {text_numeric[0]!r} must be categorical (name it in --categorical)")
    cols = [target] + ([cfg.group] if cfg.group else []) + (list(coords) if coords else [])
    data = src.read_columns(cols)
    y_raw = data[target]
    y: np.ndarray | None = None
    if len(y_raw) and cfg.positive is None and y_raw.dtype.kind in "iub":
        if 0 <= int(y_raw.min()) and int(y_raw.max()) <= 1:  # 0/1 integers: the common case, not factorized
            y = y_raw.astype(np.int8)
    if y is None:  # anything else: the in-memory path's contract (tabular.data.encode_target), --positive too
        try:
            y = encode_target_array(y_raw, target, cfg.positive)
        except UserError as exc:
            raise UserError(f"{src.path}: {exc}") from None
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        which = "positive" if n_pos == 0 else "negative"
        raise UserError(
            f"{src.path}: target column {target!r} has no {which} rows (zero {which}s after sampling; "
            "expected both classes)"
        )
    levels = discover_levels(src, categorical, limit=MAX_CATEGORICAL_LEVELS)
    fold = blocks = None
    n_blocks = 0
    k = cfg.cv.n_folds
    if k == 1:
        raise UserError("--folds must be 0 (no cross-validation) or >= 2")
    if mode == "spatial":
        cx, cy = data[coords[0]], data[coords[1]]
        xm, ym = coords_to_metres(cx, cy, lonlat=looks_like_lonlat(cx, cy))
        b = make_blocks(xm, ym, y, cfg.cv.block_size_m)
        blocks, n_blocks = b.ids, b.n_blocks
        if k >= 2:
            fold = spatial_fold_of_rows(b, k, cfg.seed)
    elif mode == "group":
        g = data[cfg.group]
        if g.dtype.kind == "f" and np.isnan(g).any():
            raise UserError(f"{src.path}: --group column {cfg.group!r} has missing values")
        uniq, inv = np.unique(g, return_inverse=True)
        n_blocks = len(uniq)
        blocks = inv.astype(np.int32)
        if k >= 2:
            if n_blocks < k:
                raise UserError(f"--group column has {n_blocks} groups, fewer than the {k} CV folds")
            from tabular.spatial import assign_block_folds  # noqa: PLC0415 - only for grouped CV

            cells = np.bincount(blocks, minlength=n_blocks)
            pos = np.bincount(blocks, weights=y.astype(np.float64), minlength=n_blocks).astype(np.int64)
            fold = assign_block_folds(cells, pos, k, cfg.seed)[blocks]
    elif k >= 2:
        if min(n_pos, len(y) - n_pos) < k:
            raise UserError(f"the smaller class has {min(n_pos, len(y) - n_pos)} rows, fewer than the {k} CV folds")
        fold = stratified_fold_of_rows(y, k, cfg.seed)
    del data
    return TablePlan(
        src,
        target,
        features,
        categorical,
        levels,
        coords,
        y,
        fold,
        blocks,
        mode,
        reason,
        n_blocks,
        src.meta.negative_rate,
    )


def table_fingerprint(src: TableSource) -> Fingerprint:
    """A metadata fingerprint of a dataset (relative part names, sizes, schema, row count); not its bytes."""
    h = hashlib.sha256()
    base = src.path if src.path.is_dir() else src.path.parent
    for f in src.files:
        h.update(f"{f.relative_to(base)}\0{f.stat().st_size}\0".encode())
    h.update(str(src.schema.remove_metadata()).encode())
    h.update(str(src.num_rows).encode())
    return Fingerprint(h.hexdigest(), src.num_rows, len(src.columns), str(src.path))


def subset_rows(ds: lgb.Dataset, positions: np.ndarray) -> lgb.Dataset:
    """A LightGBM subset of ``ds`` holding ``positions`` (sorted), without a Python list of millions of ints."""
    sub = ds.subset([0])
    sub.used_indices = np.ascontiguousarray(np.sort(positions), dtype=np.int32)
    return sub


def inner_split(
    positions: np.ndarray, groups: np.ndarray | None, labels: np.ndarray, valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) of training ``positions`` for early stopping: whole groups held out
    (:func:`tabular.spatial.inner_block_split`), else a seeded random ``valid_fraction`` of the rows."""
    if groups is not None:
        return inner_block_split(positions, groups, labels, valid_fraction, seed)
    mask = np.random.default_rng(seed).random(len(positions)) < valid_fraction
    return positions[~mask], positions[mask]


def class_weight(y: np.ndarray) -> float:
    """``n_neg / n_pos`` of labels ``y`` (the positives' ``scale_pos_weight``; n_pos counted at least 1)."""
    n_pos = int(y.sum())
    return (len(y) - n_pos) / max(n_pos, 1)


def build_binned_dataset(
    src: TableSource,
    encoder: FeatureEncoder,
    labels: np.ndarray,
    categorical_idx: list[int],
    *,
    rows: np.ndarray | None = None,
    max_bin: int = 255,
    batch_rows: int = 262_144,
    sample_rows: int = 200_000,
    seed: int = 42,
    num_threads: int = 0,
) -> lgb.Dataset:
    """LightGBM's binned matrix of the table (``rows`` only, when given), built in two streaming passes."""
    seq = TableSequence(src, encoder, batch_rows, rows=rows)
    ds = lgb.Dataset(
        seq,
        label=np.asarray(labels, dtype=np.float32),
        feature_name=encoder.features,
        categorical_feature=categorical_idx,
        free_raw_data=True,
        params={
            "max_bin": max_bin,
            "verbosity": -1,
            "bin_construct_sample_cnt": int(sample_rows),
            "data_random_seed": seed,
            "num_threads": num_threads,
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds.construct()
    return ds


@dataclass(frozen=True)
class FoldFit:
    """One trained fold: the booster, rounds kept and the odds factor of its class weight."""

    booster: lgb.Booster
    best_iteration: int
    factor: float
    params: dict[str, Any]


def fit_on_positions(
    ds: lgb.Dataset,
    positions: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    params: dict[str, Any],
    *,
    rounds: int,
    early_stopping: int,
    valid_fraction: float,
    weights: bool,
    seed: int,
) -> FoldFit:
    """Train on the dataset rows ``positions`` (early stopping on whole groups held out of them)."""
    y = labels[positions]
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise UserError("a training fold has a single class (expected positives and negatives in every fold)")
    w = class_weight(y) if weights else 1.0
    p = dict(params, scale_pos_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if early_stopping > 0:
            tr, va = inner_split(positions, groups, labels, valid_fraction, seed)
            dtr, dva = subset_rows(ds, tr), subset_rows(ds, va)
            booster = lgb.train(
                p,
                dtr,
                num_boost_round=rounds,
                valid_sets=[dva],
                valid_names=["valid"],
                callbacks=[lgb.early_stopping(early_stopping, first_metric_only=True, verbose=False)],
            )
            best = int(booster.best_iteration or booster.current_iteration())
        else:
            dtr = subset_rows(ds, positions) if len(positions) != ds.num_data() else ds
            booster = lgb.train(p, dtr, num_boost_round=rounds)
            best = rounds
    del dtr
    gc.collect()
    return FoldFit(booster, best, odds_factor(1.0, w), p)


def early_stopping_iteration(
    booster: lgb.Booster, X: np.ndarray, y: np.ndarray, rounds: int, patience: int
) -> tuple[int, float]:
    """The iteration LightGBM's ``early_stopping(patience, first_metric_only=True)`` callback would keep,
    for a ``booster`` already trained ``rounds`` rounds, scored on the validation rows ``(X, y)``.

    The validation ROC-AUC (the first metric of :meth:`tabular.config.LGBMParams.booster_params`) is
    computed after every iteration from the accumulated raw scores; as the callback does, a score counts
    as better only when strictly higher, and the scan stops ``patience`` iterations after the best.
    Returns ``(best_iteration, best_auc)`` (iterations counted from 1). Used by engines whose
    training cannot stop early (the Dask engine), so that both engines keep the same iteration.
    """
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415 - only where an engine emulates early stopping

    raw = np.zeros(len(y), dtype=np.float64)
    best, best_it = -np.inf, 0
    n_trees = min(rounds, booster.current_iteration())
    for it in range(n_trees):
        raw += booster.predict(X, start_iteration=it, num_iteration=1, raw_score=True)
        auc = float(roc_auc_score(y, raw))
        if auc > best:
            best, best_it = auc, it
        elif it - best_it >= patience:
            break
    return best_it + 1, best


def _subsample_keep(y: np.ndarray, per_positive: float, seed: int) -> tuple[np.ndarray, float]:
    """Row positions kept by negative subsampling (all positives, negatives at rate q) and the realized rate."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    q = min(1.0, per_positive * n_pos / max(n_neg, 1))
    rng = np.random.default_rng(seed + 7919)
    keep = (y == 1) | (rng.random(len(y)) < q)
    kept_neg = int(keep.sum()) - n_pos
    if kept_neg == 0:
        raise UserError("negative subsampling kept zero negatives (expected some; raise --negatives-per-positive)")
    return np.flatnonzero(keep), kept_neg / n_neg


def _log_frame(df: pd.DataFrame, folder: Path, name: str) -> None:
    path = folder / name
    if name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    mlflow.log_artifact(str(path))


def plan_params(plan: TablePlan) -> dict[str, Any]:
    """The run parameters describing a plan (columns, folds, sampling), as both engines log them."""
    return {
        "cv_mode": plan.cv_mode,
        "cv_mode_reason": plan.cv_reason,
        "cv_blocks": plan.n_blocks,
        "target_column": plan.target,
        "coords": ",".join(plan.coords) if plan.coords else "",
        "n_features": len(plan.features),
        "n_positive": int(plan.y.sum()),
        "features": ",".join(plan.features)[:6000],
        "categorical_features": ",".join(plan.categorical)[:6000],
        "table_negative_rate": plan.table_negative_rate,
    }


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
    _log_frame(fm, tmp, "cv_fold_metrics.csv")
    rel = reliability_table(y, oof)
    _log_frame(rel, tmp, "calibration.csv")
    save_reliability_plot(rel, tmp / "reliability.png", title=title)
    mlflow.log_artifact(str(tmp / "reliability.png"))
    n = len(y)
    if n <= oof_max_rows:
        oof_df = pd.DataFrame({"row": np.arange(n), "y_true": y, "p_oof": oof, "fold": fold})
        if plan.coords:
            xy = plan.source.read_columns(list(plan.coords))
            oof_df.insert(1, plan.coords[0], xy[plan.coords[0]])
            oof_df.insert(2, plan.coords[1], xy[plan.coords[1]])
        _log_frame(oof_df, tmp, "oof_predictions.parquet")
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
    _log_frame(importance, tmp, "shap_importance.csv")
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


def train_dataset_model(cfg: TrainTabularConfig, log: Callable[[str], None] = print) -> TabularTrainResult:
    """Run the large-table training job (module docstring) inside the active MLflow run."""
    if mlflow.active_run() is None:
        raise RuntimeError("train_dataset_model needs an active MLflow run (common.tracking.tracked_run)")
    start = time.perf_counter()
    plan = plan_table(cfg)
    src, y = plan.source, plan.y
    log_fingerprint(table_fingerprint(src))
    n, n_pos = len(y), int(y.sum())
    sc = cfg.scale
    log(
        f"data: {n:,} rows, {len(plan.features)} features ({len(plan.categorical)} categorical), "
        f"{n_pos:,} positive ({n_pos / n:.3%}); "
        + (
            f"{cfg.cv.n_folds}-fold {plan.cv_mode} CV ({plan.cv_reason}"
            + (f", {plan.n_blocks} blocks of {cfg.cv.block_size_m:g} m" if plan.cv_mode == "spatial" else "")
            + ")"
            if plan.fold is not None
            else "no cross-validation (--folds 0)"
        )
    )
    mlflow.log_params(plan_params(plan))
    # rows the models learn from: all, or every positive plus subsampled negatives
    if sc.imbalance == "subsample":
        used, train_rate = _subsample_keep(y, sc.negatives_per_positive, cfg.seed)
        log(f"negative subsampling: kept {len(used):,} rows (negatives at rate {train_rate:.4g})")
    else:
        used, train_rate = None, 1.0
    weights = sc.imbalance == "weights"
    y_used = y if used is None else y[used]
    fold_used = None if plan.fold is None else (plan.fold if used is None else plan.fold[used])
    groups_used = None if plan.blocks is None else (plan.blocks if used is None else plan.blocks[used])
    encoder = FeatureEncoder(plan.features, plan.levels)
    cat_idx = [j for j, c in enumerate(plan.features) if c in plan.levels]
    params = cfg.lgbm.booster_params(cfg.seed, n_rows=len(y_used))
    t0 = time.perf_counter()
    ds = build_binned_dataset(
        src,
        encoder,
        y_used,
        cat_idx,
        rows=used,
        max_bin=cfg.lgbm.max_bin,
        batch_rows=sc.batch_rows,
        sample_rows=sc.bin_sample_rows,
        seed=cfg.seed,
        num_threads=params["num_threads"],
    )
    log(f"binned {ds.num_data():,} rows x {len(plan.features)} features in {time.perf_counter() - t0:.1f}s")
    mlflow.log_metric("bin_seconds", time.perf_counter() - t0)
    lg = cfg.lgbm

    def tuned(binned: lgb.Dataset, positions: np.ndarray, seed: int, name: str) -> dict[str, Any]:
        """``params``, or with ``--tune`` the best of an Optuna search on ``positions`` (:mod:`tabular.tuning`)."""
        if sc.tune_trials <= 0:
            return params
        from tabular.tuning import tune_params  # noqa: PLC0415 - optuna loads only with --tune

        return tune_params(binned, positions, y_used, groups_used, params, lg, sc.tune_trials, weights, seed, name)

    summary: dict[str, float] = {}
    threshold = 0.5
    rounds = lg.num_boost_round
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if fold_used is not None:
            k = cfg.cv.n_folds
            fits: list[FoldFit] = []
            cv_start = time.perf_counter()
            for i in range(k):
                t_fold = time.perf_counter()
                positions = np.flatnonzero(fold_used != i)
                fit = fit_on_positions(
                    ds,
                    positions,
                    y_used,
                    groups_used,
                    tuned(ds, positions, cfg.seed + i, f"fold{i}"),
                    rounds=lg.num_boost_round,
                    early_stopping=lg.early_stopping_rounds,
                    valid_fraction=lg.valid_fraction,
                    weights=weights,
                    seed=cfg.seed + i,
                )
                fits.append(fit)
                now = time.perf_counter()
                log(
                    f"fold {i + 1}/{k}: {int((plan.fold == i).sum()):,} held-out rows, {fit.best_iteration} rounds, "
                    f"{now - t_fold:.1f}s (elapsed {now - cv_start:.1f}s)"
                )
            oof, shap_sample = _predict_folds(src, encoder, plan, fits, train_rate, sc, cfg.seed)
            fold_rows = [
                {
                    "fold": i,
                    "n_train": int((fold_used != i).sum()),
                    "n_valid": int((plan.fold == i).sum()),
                    "best_iteration": fits[i].best_iteration,
                }
                for i in range(k)
            ]
            threshold, summary = log_cv_results(
                plan,
                oof,
                fold_rows,
                tmp,
                title=f"reliability, {plan.cv_mode} CV out-of-fold",
                oof_max_rows=sc.oof_max_rows,
            )
            rounds = max(1, int(round(float(np.mean([f.best_iteration for f in fits])))))
            del fits
            gc.collect()
        else:
            shap_sample = _sample_rows(src, plan, sc.shap_rows, cfg.seed)
        log(f"refit on all {ds.num_data():,} rows with {rounds} rounds")
        everything = np.arange(ds.num_data())
        t_fit = time.perf_counter()
        final = fit_on_positions(
            ds,
            everything,
            y_used,
            groups_used,
            tuned(ds, everything, cfg.seed, "final"),
            rounds=rounds,
            early_stopping=0,
            valid_fraction=lg.valid_fraction,
            weights=weights,
            seed=cfg.seed,
        )
        fit_s = time.perf_counter() - t_fit
        del ds
        gc.collect()
        return finish_training(
            cfg,
            plan,
            final.booster,
            tmp,
            threshold=threshold,
            best_iteration=final.best_iteration,
            scale_pos_weight=final.params["scale_pos_weight"],
            train_rate=train_rate,
            shap_sample=shap_sample,
            summary=summary,
            start=start,
            metrics={"final_num_rounds": rounds, "refit_seconds": fit_s},
        )


def _sample_indices(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 104729)
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


def _sample_rows(src: TableSource, plan: TablePlan, k: int, seed: int) -> pd.DataFrame:
    """``k`` random rows of the raw feature columns as a DataFrame (for SHAP and the model signature)."""
    want = _sample_indices(src.num_rows, k, seed)
    parts = []
    start = 0
    for batch in src.batches(plan.features):
        m = batch.num_rows
        lo, hi = np.searchsorted(want, [start, start + m])
        if hi > lo:
            parts.append(batch.take(pa.array(want[lo:hi] - start)))
        start += m
    return _batches_to_frame(parts, plan.features)


def _batches_to_frame(parts: list[pa.RecordBatch], features: list[str]) -> pd.DataFrame:
    table = pa.Table.from_batches(parts)
    return pd.DataFrame({name: column_numpy(table.column(name)) for name in features})


def _predict_folds(
    src: TableSource,
    encoder: FeatureEncoder,
    plan: TablePlan,
    fits: list[FoldFit],
    train_rate: float,
    sc: Any,
    seed: int,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Out-of-fold P(landslide) on the table's prior for every row (one streaming pass), and a SHAP row sample."""
    n = src.num_rows
    oof = np.full(n, np.nan, dtype=np.float64)
    want = _sample_indices(n, sc.shap_rows, seed)
    parts = []
    start = 0
    fold = plan.fold
    for batch in src.batches(plan.features, sc.batch_rows, prefetch=2):
        m = batch.num_rows
        X = encoder.encode(batch)
        f = fold[start : start + m]
        for i, fit in enumerate(fits):
            sel = f == i
            if sel.any():
                p = fit.booster.predict(X[sel], num_iteration=fit.best_iteration)
                oof[start : start + m][sel] = correct_prior(p, fit.factor * train_rate)
        lo, hi = np.searchsorted(want, [start, start + m])
        if hi > lo:
            parts.append(batch.take(pa.array(want[lo:hi] - start)))
        start += m
    if np.isnan(oof).any():
        raise ValueError("the folds do not cover every row (expected a partition of the rows)")
    return oof, _batches_to_frame(parts, plan.features)


# -- scoring ----------------------------------------------------------------------------------------
def predict_dataset(cfg: PredictTabularConfig, *, tracking_uri: str | None = None) -> PredictTableResult:
    """Score a large table into a Parquet dataset folder ``cfg.out`` (and rasters with ``cfg.raster_out``)."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("predict_dataset needs an active MLflow run (common.tracking.tracked_run)")
    src = TableSource(cfg.data)
    out = Path(cfg.out)
    if out.suffix.lower() == ".csv":
        raise UserError(f"--out {out}: a large table is written as a Parquet dataset folder (expected a folder name)")
    model = load_tabular_model(cfg.model, tracking_uri=tracking_uri)
    src.require(model.feature_names_, "feature column(s)")
    log_fingerprint(table_fingerprint(src), context="inference")
    compile_s = None
    if cfg.compiled:
        t0 = time.perf_counter()
        model.compile(cfg.compile_cache)
        compile_s = time.perf_counter() - t0
    coords = src.coord_columns()
    writer = None
    notes: list[str] = []
    if cfg.raster_out:
        from tabular.susceptibility import SusceptibilityRaster  # noqa: PLC0415 - rasterio only for --raster-out

        if coords is None:
            raise UserError(f"--raster-out needs cell coordinates x, y in {src.path}")
        notes.extend(sampled_map_check(src, allow=cfg.allow_sampled_map))
        grid = _raster_grid(src, cfg)
        writer = SusceptibilityRaster(grid, Path(cfg.raster_out), breaks=cfg.class_breaks)
        writer.check_writable()
    stats = score_dataset(src, model, out, coords=coords, raster=writer, batch_rows=cfg.batch_rows)
    n = stats.rows
    metrics = {
        "n_rows": float(n),
        "positive_rate": stats.positives / max(n, 1),
        "mean_p": stats.p_sum / max(n, 1),
        "unseen_category_values": float(sum(stats.unseen.values())),
        "predict_proba_seconds": stats.predict_seconds,
        "score_seconds": stats.seconds,
        "rows_per_second": stats.rows_per_second,
        "peak_rss_mb": peak_rss_mb(),
    }
    if compile_s is not None:
        metrics["compile_seconds"] = compile_s
    mlflow.log_metrics(metrics)
    mlflow.log_params({"threshold": model.threshold_, "model_uri": cfg.model})
    if writer is not None:
        writer.log()
    return PredictTableResult(
        run.info.run_id,
        str(out),
        n,
        stats.positives,
        model.threshold_,
        stats.unseen,
        model.is_compiled,
        maps=tuple(str(p) for p in writer.written) if writer is not None else (),
        warnings=tuple(notes),
    )


def sampled_map_check(src: TableSource, *, allow: bool) -> list[str]:
    """Refuse a susceptibility map of a table that keeps only a sample of the grid's cells.

    A table built with ``--negatives-per-positive`` holds every landslide cell but only a share of the
    others (its ``sampling`` metadata says so): its map would be a sprinkle of cells, not the area's.
    With ``allow`` the map is written and the returned warning says what it is.
    """
    sampling = src.meta.sampling
    rate = src.meta.negative_rate
    if sampling.get("mode", "all") == "all" and rate >= 1.0:
        return []
    what = (
        f"{src.path} keeps a sample of the grid's cells (sampling {sampling.get('mode', '?')}, negative cells kept "
        f"at rate {rate:.4g})"
    )
    if not allow:
        raise UserError(
            f"--raster-out: {what}, so its map would be a sprinkle of cells; build the table with --all-cells "
            "to map the area (or pass --allow-sampled-map to write it anyway)"
        )
    return [f"{what}: the map shows only the sampled cells (--allow-sampled-map)"]


@dataclass(frozen=True)
class ScoreStats:
    """What :func:`score_dataset` did: rows, predicted positives, sum of p, unseen levels, seconds."""

    rows: int
    positives: int
    p_sum: float
    unseen: dict[str, int]
    predict_seconds: float
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def score_dataset(
    src: TableSource,
    model: LandslideClassifier,
    out: Path,
    *,
    coords: tuple[str, str] | None,
    raster: Any = None,
    batch_rows: int = 262_144,
) -> ScoreStats:
    """Score ``src`` batch by batch into the Parquet dataset folder ``out`` (written atomically).

    Columns: the coordinates (float64, when given), ``p_landslide`` (float32, prior-corrected as the
    model says) and ``label`` (int8 at the model's threshold). ``raster``: an open
    :class:`tabular.susceptibility.SusceptibilityRaster` that receives each batch (NaN where a model
    input is NaN). Memory holds one batch.
    """
    encoder = FeatureEncoder(model.feature_names_, model.categorical_levels_)
    n = n_pos = 0
    p_sum = t_pred = 0.0
    start = time.perf_counter()
    cols = list(model.feature_names_) + (list(coords) if coords else [])
    with atomic_dataset_dir(out) as tmp_dir:
        fields = [pa.field(coords[0], pa.float64()), pa.field(coords[1], pa.float64())] if coords else []
        fields += [pa.field("p_landslide", pa.float32()), pa.field("label", pa.int8())]
        schema = pa.schema(fields, metadata=src.schema.metadata)
        # the rasters are finished (or fail) before the dataset folder is renamed into place
        with (
            contextlib.nullcontext() if raster is None else raster,
            pq.ParquetWriter(tmp_dir / "part-00000.parquet", schema, compression="zstd") as pw,
        ):
            dtype = np.float64 if model.is_compiled else np.float32
            for batch in src.batches(cols, batch_rows, prefetch=2):
                X = encoder.encode(batch, dtype)
                t0 = time.perf_counter()
                p = model._predict_positive(X).astype(np.float32)
                t_pred += time.perf_counter() - t0
                label = (p >= model.threshold_).astype(np.int8)
                arrays: list[pa.Array] = []
                if coords:
                    xs = column_numpy(batch.column(batch.schema.get_field_index(coords[0])))
                    ys = column_numpy(batch.column(batch.schema.get_field_index(coords[1])))
                    arrays += [pa.array(xs, pa.float64()), pa.array(ys, pa.float64())]
                    if raster is not None:
                        raster.add(xs, ys, np.where(np.isnan(X).any(axis=1), np.float32(np.nan), p))
                arrays += [pa.array(p), pa.array(label)]
                pw.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                n += len(p)
                n_pos += int(label.sum())
                p_sum += float(p.sum(dtype=np.float64))
    return ScoreStats(n, n_pos, p_sum, dict(encoder.unseen), t_pred, time.perf_counter() - start)


def _raster_grid(src: TableSource, cfg: PredictTabularConfig) -> Any:
    if cfg.grid:
        from common.geo import Grid  # noqa: PLC0415 - rasterio only for --raster-out

        return Grid.from_raster(cfg.grid)
    grid = src.meta.grid_object()
    if grid is None:
        raise UserError(
            f"{src.path} carries no raster grid (not written by build_table/make_table); pass --grid REF.tif"
        )
    return grid
