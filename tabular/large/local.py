"""The local engine: training and scoring of cell tables too large for pandas, streamed in this process.

:func:`train_dataset_model` (``train_tabular --data DIR|FILE.arrow``):

1. reads only the label, coordinate and group columns (and the categorical columns' levels);
2. makes the folds: spatial blocks (:mod:`tabular.spatial`, the default when x/y exist and no group
   column is given), a group column, or stratified;
3. bins the features once, streaming: a ``lightgbm.Sequence`` (:class:`tabular.large.source.TableSequence`)
   feeds LightGBM a row sample for the bin bounds, then every row, so peak memory is about LightGBM's
   binned matrix (about one byte per cell and feature) plus a few arrays of one value per row, never
   the raw table;
4. trains one model per fold on a *subset* of that binned matrix (early stopping on whole blocks held
   out of the training fold), optionally after an Optuna search nested in the fold
   (:mod:`tabular.large.tuning`), and predicts each fold's held-out rows in one more streaming pass;
5. balances the classes by weights or negative subsampling and prior-corrects the probabilities
   (:mod:`tabular.calibration`; the table's own sampling rate included), logs the Brier score and a
   reliability plot;
6. refits on every row with the mean best round count, then frees the binned matrix before the out-of-fold
   pass and the CV report (so their per-row temporaries never sit on top of it), and logs the model in the
   same format as the in-memory path (:mod:`tabular.serving`), with SHAP on a row sample.

:func:`predict_dataset` (``predict_tabular --data DIR``) scores a table batch by batch into a Parquet
dataset (``x``, ``y`` when present, ``p_landslide``, ``label``), optionally compiled, and with
``raster_out`` writes the susceptibility GeoTIFF, classes and PNG (:mod:`tabular.susceptibility`).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
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
from common.tracking import log_fingerprint
from tabular.calibration import correct_prior
from tabular.config import PredictTabularConfig, TrainTabularConfig
from tabular.large.core import FoldFit, build_binned_dataset, fit_on_positions, release_memory
from tabular.large.plan import TablePlan, plan_params, plan_table, subsample_keep, table_fingerprint
from tabular.large.report import (
    batches_to_frame,
    finish_training,
    log_cv_results,
    peak_rss_mb,
    sample_indices,
    sample_rows,
)
from tabular.large.source import FeatureEncoder, TableSource, atomic_dataset_dir, column_numpy, prefetched
from tabular.large.stages import BackgroundSink
from tabular.model import LandslideClassifier
from tabular.results import PredictTableResult, TabularTrainResult
from tabular.serving import load_tabular_model


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
        used, train_rate = subsample_keep(y, sc.negatives_per_positive, cfg.seed)
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
    release_memory()  # the streamed batches and the bin-bound sample leave the resident set
    log(f"binned {ds.num_data():,} rows x {len(plan.features)} features in {time.perf_counter() - t0:.1f}s")
    mlflow.log_metric("bin_seconds", time.perf_counter() - t0)
    lg = cfg.lgbm

    def tuned(binned: lgb.Dataset, positions: np.ndarray, seed: int, name: str) -> dict[str, Any]:
        """``params``, or with ``--tune`` the best Optuna search on ``positions`` (:mod:`tabular.large.tuning`)."""
        if sc.tune_trials <= 0:
            return params
        from tabular.large.tuning import tune_params  # noqa: PLC0415 - optuna loads only with --tune

        return tune_params(binned, positions, y_used, groups_used, params, lg, sc.tune_trials, weights, seed, name)

    summary: dict[str, float] = {}
    threshold = 0.5
    # row positions in 4 bytes where they fit (LightGBM takes int32 subsets anyway): 231 MB less per array at 57.8M
    index_dtype = np.int32 if ds.num_data() < 2**31 else np.int64
    rounds = lg.num_boost_round
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if fold_used is not None:
            k = cfg.cv.n_folds
            fits: list[FoldFit] = []
            cv_start = time.perf_counter()
            for i in range(k):
                t_fold = time.perf_counter()
                positions = np.flatnonzero(fold_used != i).astype(index_dtype)
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
                del positions
            fold_rows = [
                {
                    "fold": i,
                    "n_train": int((fold_used != i).sum()),
                    "n_valid": int((plan.fold == i).sum()),
                    "best_iteration": fits[i].best_iteration,
                }
                for i in range(k)
            ]
            rounds = max(1, int(round(float(np.mean([f.best_iteration for f in fits])))))
        else:
            fits, fold_rows = [], []
        log(f"refit on all {ds.num_data():,} rows with {rounds} rounds")
        everything = np.arange(ds.num_data(), dtype=index_dtype)
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
        # the binned matrix (about 41 bytes a row) goes before the out-of-fold pass and the CV report, whose
        # per-row temporaries (metrics sort the 57.8M scores) would otherwise sit on top of it
        del ds, everything
        release_memory()
        if fits:
            oof, shap_sample = predict_folds(src, encoder, plan, fits, train_rate, sc, cfg.seed)
            threshold, summary = log_cv_results(
                plan,
                oof,
                fold_rows,
                tmp,
                title=f"reliability, {plan.cv_mode} CV out-of-fold",
                oof_max_rows=sc.oof_max_rows,
            )
            del fits, oof
            release_memory()
        else:
            shap_sample = sample_rows(src, plan, sc.shap_rows, cfg.seed)
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


def predict_folds(
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
    oof = np.full(n, np.nan, dtype=np.float32)  # 4 bytes a row: 231 MB less at the study's 57.8M rows
    want = sample_indices(n, sc.shap_rows, seed)
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
    return oof, batches_to_frame(parts, plan.features)


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
    overlap: bool = True,
) -> ScoreStats:
    """Score ``src`` batch by batch into the Parquet dataset folder ``out`` (written atomically).

    Columns: the coordinates (float64, when given), ``p_landslide`` (float32, prior-corrected as the
    model says) and ``label`` (int8 at the model's threshold). ``raster``: an open
    :class:`tabular.susceptibility.SusceptibilityRaster` that receives each batch (NaN where a model
    input is NaN). ``overlap`` (the default) runs the stages at once: Arrow decodes two batches ahead in
    one thread, another encodes them, this thread predicts and a :class:`tabular.large.stages.BackgroundSink`
    compresses and writes (every queue two batches deep); the output is the same as with ``overlap=False``
    (one stage after the other), and so are the errors. Memory holds a few batches.
    """
    encoder = FeatureEncoder(model.feature_names_, model.categorical_levels_)
    n = n_pos = 0
    p_sum = t_pred = 0.0
    start = time.perf_counter()
    cols = list(model.feature_names_) + (list(coords) if coords else [])
    dtype = np.float64 if model.is_compiled else np.float32
    depth = 2 if overlap else 0

    def encoded() -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        for batch in src.batches(cols, batch_rows, prefetch=depth):
            X = encoder.encode(batch, dtype)
            xs = ys = None
            if coords:
                xs = column_numpy(batch.column(batch.schema.get_field_index(coords[0])))
                ys = column_numpy(batch.column(batch.schema.get_field_index(coords[1])))
            yield X, xs, ys

    with atomic_dataset_dir(out) as tmp_dir:
        fields = [pa.field(coords[0], pa.float64()), pa.field(coords[1], pa.float64())] if coords else []
        fields += [pa.field("p_landslide", pa.float32()), pa.field("label", pa.int8())]
        schema = pa.schema(fields, metadata=src.schema.metadata)
        # the rasters are finished (or fail) before the dataset folder is renamed into place; the sink's
        # thread has ended before the Parquet writer closes
        with (
            contextlib.nullcontext() if raster is None else raster,
            pq.ParquetWriter(tmp_dir / "part-00000.parquet", schema, compression="zstd") as pw,
            BackgroundSink(pw.write_batch, depth=2, name="parquet-writer")
            if overlap
            else _Inline(pw.write_batch) as sink,
        ):
            for X, xs, ys in prefetched(encoded(), depth) if overlap else encoded():
                t0 = time.perf_counter()
                p = model._predict_positive(X).astype(np.float32)
                t_pred += time.perf_counter() - t0
                label = (p >= model.threshold_).astype(np.int8)
                arrays: list[pa.Array] = []
                if xs is not None and ys is not None:
                    arrays += [pa.array(xs, pa.float64()), pa.array(ys, pa.float64())]
                    if raster is not None:
                        raster.add(xs, ys, np.where(np.isnan(X).any(axis=1), np.float32(np.nan), p))
                arrays += [pa.array(p), pa.array(label)]
                sink.put(pa.RecordBatch.from_arrays(arrays, schema=schema))
                n += len(p)
                n_pos += int(label.sum())
                p_sum += float(p.sum(dtype=np.float64))
    return ScoreStats(n, n_pos, p_sum, dict(encoder.unseen), t_pred, time.perf_counter() - start)


class _Inline:
    """The sequential stand-in for :class:`tabular.large.stages.BackgroundSink`: ``put`` consumes at once."""

    def __init__(self, consume: Callable[[Any], Any]) -> None:
        self.put = consume

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


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
