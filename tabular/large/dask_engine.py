"""The Dask engine: train and score large tables on a Dask cluster (``--engine dask [--scheduler ADDRESS]``).

On top of :mod:`tabular.large.plan`, :mod:`tabular.large.core` and :mod:`tabular.large.report`.


* **Cluster.** ``scheduler`` is the address of a running scheduler (``tcp://host:8786``; e.g. one
  started by ``dask-jobqueue``'s ``SLURMCluster`` on an HPC system); without it a
  ``distributed.LocalCluster`` of ``dask_workers`` worker processes on 127.0.0.1 is started and closed
  at the end. An unreachable scheduler, or a port that does not answer as one within
  :data:`CONNECT_TIMEOUT_S` (:func:`probe_scheduler`), is a one-line :class:`common.cli.UserError`.
* **Data.** One Dask partition per part file of the table (:class:`tabular.large.source.TableSource`, the
  same files and row order as the local engine), read and encoded on the workers with
  :class:`tabular.large.source.FeatureEncoder` (float32, categorical level codes). The folds and the
  negative subsample are decided once by the driver (:func:`tabular.large.plan.plan_table`, exactly as the
  local engine does) and shipped with each partition as that part's slice of the fold array, so both
  engines use identical folds.
* **Training.** ``lightgbm.dask.DaskLGBMClassifier`` per fold on the other folds' rows, predicted on
  the fold's rows (``predict_proba``, gathered to the driver for the metrics). LightGBM's Dask
  interface has no early stopping (and scores an ``eval_set`` per worker, on that worker's rows only),
  so early stopping is done as the local engine does it, to the same model: the driver makes the same
  inner split of each fold's training rows (whole blocks, ``valid_fraction``, seed), the fold trains
  ``num_boost_round`` rounds on the inner training rows, the inner validation rows (about
  ``valid_fraction`` of a fold's rows) are gathered to the driver and scored after every iteration, and
  the iteration LightGBM's callback would keep (:func:`tabular.large.core.early_stopping_iteration`) predicts
  the fold. The refit on all rows uses the mean kept iteration, as the local engine's, and is logged
  exactly as the local engine's model (native Booster text + ``tabular_model.json``), with the same
  metrics, calibration artifacts and prior correction.
* **Scoring** (:func:`predict_dask`): each partition is scored on a worker (``map_partitions`` over the
  parts, the Booster rebuilt from its text once per worker) and written with ``to_parquet`` into the
  output dataset folder (atomically renamed).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.dataset as pads

from common.cli import UserError
from common.dask import CONNECT_TIMEOUT_S, dask_client, probe_scheduler  # noqa: F401 - re-exported
from common.tracking import log_fingerprint
from tabular.calibration import correct_prior, odds_factor
from tabular.config import PredictTabularConfig, TrainTabularConfig
from tabular.large.core import class_weight, early_stopping_iteration, inner_split
from tabular.large.plan import plan_params, plan_table, subsample_keep, table_fingerprint
from tabular.large.report import finish_training, log_cv_results, sample_rows
from tabular.large.source import FeatureEncoder, TableSource, atomic_dataset_dir, column_numpy
from tabular.results import PredictTableResult, TabularTrainResult
from tabular.serving import load_tabular_model


def _read_part(path: str, fmt: str, columns: list[str]) -> pa.Table:
    ds = pads.dataset(path, format=fmt)
    return ds.to_table(columns=columns)


def _load_part(
    path: str,
    fmt: str,
    features: list[str],
    levels: dict[str, list[str]],
    labels: np.ndarray,
    offset: int,
    fold: np.ndarray,
    vmask: np.ndarray,
    keep: np.ndarray | None,
) -> pd.DataFrame:
    """One part as a pandas frame of float32 features, ``_label``, ``_fold``, ``_vmask`` and ``_row`` (on a worker).

    ``labels``, ``fold``, ``vmask`` and ``keep``: this part's slices of the plan's 0/1 labels (read once by the
    driver with the one target contract, ``--positive`` included), folds, inner-validation bits (bit ``i``:
    the row validates fold ``i``'s early stopping) and kept rows."""
    table = _read_part(path, fmt, list(features))
    batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
    enc = FeatureEncoder(features, levels)
    n = table.num_rows
    X = enc.encode(batch) if batch is not None else np.empty((0, len(features)), dtype=np.float32)
    df = pd.DataFrame(X, columns=features)
    df["_label"] = np.asarray(labels, dtype=np.int8)
    df["_fold"] = np.asarray(fold, dtype=np.int16)
    df["_vmask"] = np.asarray(vmask, dtype=np.int64)
    df["_row"] = np.arange(offset, offset + n, dtype=np.int64)
    if keep is not None:
        df = df[np.asarray(keep, dtype=bool)]
    return df


def _parts(src: TableSource) -> list[tuple[str, int, int]]:
    """``(path, offset, rows)`` of every part file, in the table's row order."""
    out = []
    offset = 0
    for frag in src.fragments:
        n = int(frag.count_rows())
        out.append((frag.path, offset, n))
        offset += n
    return out


def _frame(src: TableSource, plan: Any, keep: np.ndarray | None, vmask: np.ndarray | None = None) -> Any:
    import dask.dataframe as dd  # noqa: PLC0415 - dask loads only for --engine dask

    parts = _parts(src)
    fold = plan.fold if plan.fold is not None else np.zeros(len(plan.y), dtype=np.int16)
    vm = vmask if vmask is not None else np.zeros(len(plan.y), dtype=np.int64)
    meta = pd.DataFrame({c: pd.Series(dtype=np.float32) for c in plan.features})
    meta["_label"] = pd.Series(dtype=np.int8)
    meta["_fold"] = pd.Series(dtype=np.int16)
    meta["_vmask"] = pd.Series(dtype=np.int64)
    meta["_row"] = pd.Series(dtype=np.int64)
    return dd.from_map(
        _load_part,
        [p for p, _, _ in parts],
        [src.format] * len(parts),
        [plan.features] * len(parts),
        [plan.levels] * len(parts),
        [plan.y[o : o + n] for _, o, n in parts],
        [o for _, o, _ in parts],
        [fold[o : o + n] for _, o, n in parts],
        [vm[o : o + n] for _, o, n in parts],
        [None if keep is None else keep[o : o + n] for _, o, n in parts],
        meta=meta,
        enforce_metadata=False,
    )


def _classifier(cfg: TrainTabularConfig, client: Any, rounds: int, weight: float) -> Any:
    from lightgbm.dask import DaskLGBMClassifier  # noqa: PLC0415 - dask loads only for --engine dask

    p = cfg.lgbm.booster_params(cfg.seed, n_rows=10**9)
    p.pop("metric", None)
    p.pop("objective", None)
    p.pop("num_threads", None)
    p.pop("verbosity", None)
    return DaskLGBMClassifier(
        client=client,
        n_estimators=rounds,
        objective="binary",
        scale_pos_weight=weight,
        n_jobs=1,
        verbosity=-1,
        **{k: v for k, v in p.items() if k not in ("seed",)},
        random_state=cfg.seed,
    )


def train_dask_model(cfg: TrainTabularConfig, log: Callable[[str], None] = print) -> TabularTrainResult:
    """Cross-validate and refit with ``DaskLGBMClassifier`` (module docstring) inside the active MLflow run."""
    if mlflow.active_run() is None:
        raise RuntimeError("train_dask_model needs an active MLflow run (common.tracking.tracked_run)")
    if cfg.data is None:
        raise UserError("--engine dask needs --data (a Parquet dataset folder or Arrow IPC file)")
    if cfg.scale.tune_trials:
        raise UserError("--tune runs with --engine local (Optuna trials train in this process)")
    start = time.perf_counter()
    plan = plan_table(cfg)
    src, y = plan.source, plan.y
    log_fingerprint(table_fingerprint(src))
    sc = cfg.scale
    keep = None
    train_rate = 1.0
    if sc.imbalance == "subsample":
        used, train_rate = subsample_keep(y, sc.negatives_per_positive, cfg.seed)
        keep = np.zeros(len(y), dtype=bool)
        keep[used] = True
    weights = sc.imbalance == "weights"
    n = len(y)
    mlflow.log_params({"engine": "dask", **plan_params(plan)})
    rounds = cfg.lgbm.num_boost_round
    cat_idx = [j for j, c in enumerate(plan.features) if c in plan.levels]
    summary: dict[str, float] = {}
    threshold = 0.5
    with dask_client(sc.scheduler, sc.dask_workers) as client, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log(
            f"dask: {len(client.scheduler_info().get('workers', {}))} worker(s) at {client.scheduler.address}; "
            f"{n:,} rows, {len(plan.features)} features, {plan.cv_mode} CV ({plan.cv_reason})"
        )
        patience = cfg.lgbm.early_stopping_rounds
        vmask = _inner_validation_bits(plan, keep, cfg) if plan.fold is not None and patience > 0 else None
        ddf = _frame(src, plan, keep, vmask).persist()
        if plan.fold is not None:
            oof = np.full(n, np.nan)
            full = _frame(src, plan, None)
            best_its: list[int] = []
            for i in range(cfg.cv.n_folds):
                t0 = time.perf_counter()
                w = class_weight(y[(plan.fold != i) & (keep if keep is not None else True)]) if weights else 1.0
                clf = _classifier(cfg, client, rounds, w)
                if vmask is None:
                    train = ddf[ddf["_fold"] != i]
                    clf.fit(train[plan.features], train["_label"], categorical_feature=cat_idx)
                    best = rounds
                else:  # early stopping as the local engine does it: same inner split, same rule
                    inner = (ddf["_vmask"] & (1 << i)) != 0
                    train = ddf[(ddf["_fold"] != i) & ~inner]
                    clf.fit(train[plan.features], train["_label"], categorical_feature=cat_idx)
                    valid = ddf[inner]
                    Xv, yv = client.compute([valid[plan.features], valid["_label"]], sync=True)
                    best, _ = early_stopping_iteration(
                        clf.booster_, Xv.to_numpy(np.float32), yv.to_numpy(), rounds, patience
                    )
                    del Xv, yv
                best_its.append(best)
                test = full[full["_fold"] == i]
                p = clf.predict_proba(test[plan.features], num_iteration=best)[:, 1]
                rows = test["_row"].to_dask_array(lengths=True)
                p_np, rows_np = client.compute([p, rows], sync=True)
                oof[np.asarray(rows_np)] = correct_prior(np.asarray(p_np), odds_factor(1.0, w) * train_rate)
                log(
                    f"fold {i + 1}/{cfg.cv.n_folds}: {len(rows_np):,} held-out rows, {best} rounds, "
                    f"{time.perf_counter() - t0:.1f}s"
                )
            if np.isnan(oof).any():
                raise ValueError("the folds do not cover every row")
            fold_rows = [
                {"fold": i, "n_valid": int((plan.fold == i).sum()), "best_iteration": best_its[i]}
                for i in range(cfg.cv.n_folds)
            ]
            threshold, summary = log_cv_results(
                plan,
                oof,
                fold_rows,
                tmp,
                title=f"reliability, {plan.cv_mode} CV (dask)",
                oof_max_rows=sc.oof_max_rows,
            )
            rounds = max(1, int(round(float(np.mean(best_its)))))  # the refit's rounds, as the local engine's
        w = class_weight(y if keep is None else y[keep]) if weights else 1.0
        log(f"refit on all rows with {rounds} rounds")
        clf = _classifier(cfg, client, rounds, w)
        clf.fit(ddf[plan.features], ddf["_label"], categorical_feature=cat_idx)
        return finish_training(
            cfg,
            plan,
            lgb.Booster(model_str=clf.booster_.model_to_string()),
            tmp,
            threshold=threshold,
            best_iteration=rounds,
            scale_pos_weight=w,
            train_rate=train_rate,
            shap_sample=sample_rows(src, plan, sc.shap_rows, cfg.seed),
            summary=summary,
            start=start,
            metrics={"final_num_rounds": rounds},
        )


def _inner_validation_bits(plan: Any, keep: np.ndarray | None, cfg: TrainTabularConfig) -> np.ndarray:
    """int64 per table row: bit ``i`` set where the row validates fold ``i``'s early stopping.

    The same split as the local engine's (:func:`tabular.large.core.inner_split` of fold ``i``'s training
    positions among the rows used, seed ``cfg.seed + i``), so that both engines stop on the same rows."""
    used = np.flatnonzero(keep) if keep is not None else np.arange(len(plan.y))
    y_used = plan.y[used]
    fold_used = plan.fold[used]
    groups_used = None if plan.blocks is None else plan.blocks[used]
    bits = np.zeros(len(plan.y), dtype=np.int64)
    for i in range(cfg.cv.n_folds):
        positions = np.flatnonzero(fold_used != i)
        _, va = inner_split(positions, groups_used, y_used, cfg.lgbm.valid_fraction, cfg.seed + i)
        bits[used[va]] |= np.int64(1) << i
    return bits


_BOOSTERS: dict[str, lgb.Booster] = {}


def _score_part(
    path: str,
    fmt: str,
    model_text: str,
    digest: str,
    meta: dict[str, Any],
    coords: list[str] | None,
) -> pd.DataFrame:
    """Score one part on a worker: coordinates, ``p_landslide`` (float32), ``label`` (int8)."""
    booster = _BOOSTERS.get(digest)
    if booster is None:
        booster = _BOOSTERS[digest] = lgb.Booster(model_str=model_text)
    features = meta["feature_names"]
    table = _read_part(path, fmt, [*features, *(coords or [])])
    out = pd.DataFrame()
    if coords:
        for c in coords:
            out[c] = column_numpy(table.column(c)).astype(np.float64)
    if table.num_rows:
        X = FeatureEncoder(features, meta["categorical_levels"]).encode(table.combine_chunks().to_batches()[0])
        p = booster.predict(X, num_iteration=meta["best_iteration"] or None)
        p = correct_prior(p, float(meta.get("prior_odds_factor", 1.0))).astype(np.float32)
    else:
        p = np.empty(0, dtype=np.float32)
    out["p_landslide"] = p
    out["label"] = (p >= meta["threshold"]).astype(np.int8)
    return out


def predict_dask(cfg: PredictTabularConfig, *, tracking_uri: str | None = None) -> PredictTableResult:
    """Score a large table on Dask (one task per part file) into the Parquet dataset folder ``cfg.out``."""
    import dask.dataframe as dd  # noqa: PLC0415 - dask loads only for --engine dask

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("predict_dask needs an active MLflow run (common.tracking.tracked_run)")
    if cfg.raster_out:
        raise UserError("--raster-out writes one GeoTIFF from one process: use --engine local with --raster-out")
    src = TableSource(cfg.data)
    model = load_tabular_model(cfg.model, tracking_uri=tracking_uri)
    src.require(model.feature_names_, "feature column(s)")
    log_fingerprint(table_fingerprint(src), context="inference")
    xy = src.coord_columns()
    coords = list(xy) if xy else None
    text = model.booster_.model_to_string(num_iteration=model.best_iteration_ or None)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    meta = model.metadata()
    parts = _parts(src)
    empty = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in coords or []})
    empty["p_landslide"] = pd.Series(dtype=np.float32)
    empty["label"] = pd.Series(dtype=np.int8)
    t0 = time.perf_counter()
    with dask_client(cfg.scheduler) as client, atomic_dataset_dir(cfg.out) as tmp:
        k = len(parts)
        ddf = dd.from_map(
            _score_part,
            [p for p, _, _ in parts],
            [src.format] * k,
            [text] * k,
            [digest] * k,
            [meta] * k,
            [coords] * k,
            meta=empty,
            enforce_metadata=False,
        )
        ddf.to_parquet(str(tmp), write_index=False, compute=True, compression="zstd")
        n = n_pos = 0
        p_sum = 0.0
        for batch in pads.dataset(str(tmp), format="parquet").to_batches(columns=["p_landslide", "label"]):
            n += batch.num_rows
            n_pos += int(pa.compute.sum(batch.column(1)).as_py() or 0)
            p_sum += float(pa.compute.sum(batch.column(0)).as_py() or 0.0)
        del client
    elapsed = time.perf_counter() - t0
    mlflow.log_metrics(
        {
            "n_rows": float(n),
            "positive_rate": n_pos / max(n, 1),
            "mean_p": p_sum / max(n, 1),
            "score_seconds": elapsed,
            "rows_per_second": n / elapsed if elapsed > 0 else 0.0,
        }
    )
    mlflow.log_params({"threshold": model.threshold_, "model_uri": cfg.model, "engine": "dask"})
    return PredictTableResult(run.info.run_id, str(cfg.out), n, n_pos, model.threshold_, {}, False)
