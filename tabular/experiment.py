"""The tabular experiments behind ``train_tabular`` and ``predict_tabular``, logged to the active MLflow run.

:func:`train_tabular_model`: load and validate the table, k-fold cross-validation (out-of-fold
probabilities, the F1-optimal threshold, per-fold and mean ± std metrics), refit on every row with
the mean best round count, SHAP (global importance, summary plot, per-region reasons), and the model
with the MLflow pyfunc of :mod:`tabular.pyfunc_model`. Artifacts: ``oof_predictions.csv`` (:mod:`common.oof`),
``cv_fold_metrics.csv``, ``shap_importance.csv``, ``shap_summary.png``, ``explanations.csv``.

:func:`predict_table`: a logged model applied to a new table, written as CSV with the top SHAP reasons.

Both run inside the run the command opened (``common.tracking.tracked_run``) and never change
MLflow's global state.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd

from common.atomic import atomic_write
from common.cli import UserError
from common.fingerprint import fingerprint_dataframe
from common.metrics import METRIC_NAMES
from common.oof import log_oof, oof_frame
from common.tracking import log_fingerprint, set_run_kind
from tabular.config import PredictTabularConfig, TrainTabularConfig
from tabular.cv import cross_validate
from tabular.data import load_table, prepare_training_table
from tabular.explain import global_importance, save_summary_plot
from tabular.model import LandslideClassifier
from tabular.results import PredictTableResult, TabularTrainResult
from tabular.serving import load_tabular_model, log_tabular_model
from tabular.spatial import frame_coords, resolve_cv_mode, spatial_folds
from tabular.synthetic import make_region_table

PREDICT_SUFFIXES = (".csv",)


def load_training_table(cfg: TrainTabularConfig) -> tuple[pd.DataFrame, str]:
    """The table to train on and its source (the built-in synthetic table without ``cfg.data``)."""
    if cfg.data is None:
        return make_region_table(
            cfg.n_regions, seed=cfg.seed
        ), f"synthetic:make_region_table(n={cfg.n_regions},seed={cfg.seed})"
    return load_table(cfg.data), str(cfg.data)


def _log_csv(df: pd.DataFrame, folder: Path, name: str) -> None:
    with atomic_write(folder / name) as fh:
        df.to_csv(fh, index=False)
    mlflow.log_artifact(str(folder / name))


def train_tabular_model(cfg: TrainTabularConfig, log: Callable[[str], None] = print) -> TabularTrainResult:
    """Run the whole training job (see the module docstring) inside the active MLflow run."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("train_tabular_model needs an active MLflow run (common.tracking.tracked_run)")
    set_run_kind("tabular")
    start = time.perf_counter()
    df, source = load_training_table(cfg)
    log_fingerprint(fingerprint_dataframe(df, source=source))
    drop = list(cfg.drop)
    if cfg.data is None:
        drop += [c for c in ("lon", "lat") if c not in drop]
    coords = frame_coords(list(df.columns), cfg.cv.coords)
    cv_mode, cv_reason = resolve_cv_mode(cfg.cv.mode, coords is not None, cfg.group)
    if cv_mode == "spatial":  # coordinates place the blocks and are never features
        drop += [c for c in coords if c not in drop]
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
    folds = inner_groups = None
    how = f"grouped by {cfg.group}" if cfg.group else "stratified"
    if cv_mode == "spatial":
        folds, blocks = spatial_folds(
            df[coords[0]].to_numpy(), df[coords[1]].to_numpy(), table.y, cfg.cv.block_size_m, cfg.cv.n_folds, cfg.seed
        )
        inner_groups = blocks.ids
        how = f"spatial ({blocks.n_blocks} blocks of {cfg.cv.block_size_m:g} m)"
    elif table.groups is not None:
        inner_groups = pd.factorize(pd.Series(table.groups))[0]
    log(
        f"data: {len(table.y)} rows, {table.X.shape[1]} features ({len(table.categorical)} categorical), "
        f"{n_pos} positive ({n_pos / len(table.y):.1%}); {cfg.cv.n_folds}-fold {how} CV ({cv_reason})"
    )
    mlflow.log_params(
        {
            "n_features": table.X.shape[1],
            "n_positive": n_pos,
            "features": ",".join(table.X.columns)[:6000],
            "cv_mode": cv_mode,
            "cv_mode_reason": cv_reason,
        }
    )
    res = cross_validate(
        table.X,
        table.y,
        params=cfg.lgbm,
        categorical=table.categorical,
        n_folds=cfg.cv.n_folds,
        groups=table.groups,
        seed=cfg.seed,
        folds=folds,
        progress=log,
        inner_groups=inner_groups,
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
        id_column=table.id_column,
    )
    model.fit(table.X, table.y, num_boost_round=res.mean_best_iteration).set_threshold(res.threshold)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log_oof(oof_frame(table.ids, table.y, res.oof, res.fold))
        _log_csv(res.fold_metrics, tmp, "cv_fold_metrics.csv")
        importance = global_importance(model, table.X)
        _log_csv(importance, tmp, "shap_importance.csv")
        save_summary_plot(model, table.X, tmp / "shap_summary.png")
        mlflow.log_artifact(str(tmp / "shap_summary.png"))
        reasons = model.explain(table.X, top_k=cfg.top_k)
        reasons.insert(0, table.id_column or "region_id", table.ids)
        _log_csv(reasons, tmp, "explanations.csv")
    info = log_tabular_model(model, table.X)
    elapsed = time.perf_counter() - start
    mlflow.log_metric("train_seconds", elapsed)
    return TabularTrainResult.of_run(
        run.info.run_id,
        logged_model_uri=info.model_uri,
        summary=res.summary,
        threshold=res.threshold,
        importance=importance,
        n_folds=cfg.cv.n_folds,
        seconds=elapsed,
    )


def predict_table(cfg: PredictTabularConfig, *, tracking_uri: str | None = None) -> PredictTableResult:
    """Score ``cfg.data`` with the model ``cfg.model`` into ``cfg.out`` inside the active MLflow run."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("predict_table needs an active MLflow run (common.tracking.tracked_run)")
    out = Path(cfg.out)
    if out.suffix.lower() not in PREDICT_SUFFIXES:
        raise UserError(f"--out {out}: unsupported output format {out.suffix or '(no suffix)'!r} (expected .csv)")
    model = load_tabular_model(cfg.model, tracking_uri=tracking_uri)
    compile_s = None
    if cfg.compiled:
        t0 = time.perf_counter()
        model.compile(cfg.compile_cache)
        compile_s = time.perf_counter() - t0
    df = load_table(cfg.data)
    log_fingerprint(fingerprint_dataframe(df, source=str(cfg.data)), context="inference")
    id_col = cfg.id_column
    if id_col is None:  # the id column stored with the model, else region_id, else the row number
        id_col = next((c for c in (model.id_column, "region_id") if c is not None and c in df.columns), None)
    elif id_col not in df.columns:
        raise UserError(f"{cfg.data}: id column {id_col!r} not found")
    ids = df[id_col].to_numpy() if id_col is not None else df.index.to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unseen levels are reported in the result
        t0 = time.perf_counter()
        p = model.predict_proba(df)[:, 1]
        predict_s = time.perf_counter() - t0
        unseen = dict(model.last_unseen_counts_)
        reasons = model.explain(df, top_k=cfg.top_k) if cfg.top_k > 0 else pd.DataFrame(index=df.index)
    result = pd.DataFrame({id_col or "region_id": ids, "p_landslide": p, "label": (p >= model.threshold_).astype(int)})
    result = pd.concat([result, reasons.reset_index(drop=True)], axis=1)
    with atomic_write(out) as fh:
        result.to_csv(fh, index=False)
    metrics = {
        "n_rows": float(len(result)),
        "positive_rate": float(result["label"].mean()),
        "mean_p": float(p.mean()),
        "unseen_category_values": float(sum(unseen.values())),
        "predict_proba_seconds": float(predict_s),
    }
    if compile_s is not None:
        metrics["compile_seconds"] = float(compile_s)
    mlflow.log_metrics(metrics)
    mlflow.log_params({"threshold": model.threshold_, "model_uri": cfg.model})
    return PredictTableResult(
        run.info.run_id, str(out), len(result), int(result["label"].sum()), model.threshold_, unseen, model.is_compiled
    )
