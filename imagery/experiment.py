"""The train/validate/test protocol behind ``python -m pipelines.train_imagery`` (single run or k-fold).

:func:`run_folds`, per fold: carve a validation split from the training patches
(``imagery.splits.holdout_split``), fit the normaliser on the training part, train
(``imagery.train.Trainer``), tune the threshold on the validation split, log the segmenter
(``imagery.serving.log_segmenter``), overlays and a precision-recall curve, then score the held-out
test fold. Out-of-fold patch probabilities come from the test folds (k-fold) or from the validation
split (single run, fold 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imagery.config import TrainConfig
from imagery.evaluate import LOSSES_WITH_ALPHA, OOF_COLUMNS, evaluate_segmenter, save_pr_curve, segmentation_metrics


# ------------------------------------------------------------------------------- splits
def holdout_positions(ids: np.ndarray, val_fraction: float, seed: int,
                      labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(train, val)`` of ``imagery.splits.holdout_split`` (stratified by patch label when possible)."""
    from imagery.splits import holdout_split

    strat = None
    if labels is not None:
        _, counts = np.unique(labels, return_counts=True)
        n_val = int(np.ceil(val_fraction * len(ids)))
        if len(counts) == 2 and counts.min() >= 2 and n_val >= 2 and len(ids) - n_val >= 2:
            strat = labels
    tr, va = holdout_split(ids, val_fraction, seed, stratify=strat)
    return _positions(ids, tr), _positions(ids, va)


def kfold_positions(ids: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Positions ``(train, test)`` per fold of ``imagery.splits.kfold_splits`` (which returns ids)."""
    from imagery.splits import kfold_splits

    return [(_positions(ids, tr), _positions(ids, te)) for tr, te in kfold_splits(ids, k, seed)]


def _positions(ids: np.ndarray, sel_ids: Any) -> np.ndarray:
    """Positions in ``ids`` of the patch ids ``sel_ids`` (in that order)."""
    pos = {int(v): i for i, v in enumerate(np.asarray(ids))}
    return np.array([pos[int(v)] for v in np.asarray(sel_ids)], dtype=np.int64)


# ------------------------------------------------------------------------------- data
def load_training_data(cfg: TrainConfig, tmp: Path) -> tuple[Any, Any]:
    """The labelled patches to train on and their fingerprint (synthetic ones without ``--data``)."""
    from common.fingerprint import fingerprint_array
    from imagery.dataset import load_patches

    d = cfg.data
    if d.path is None:
        from imagery.synthetic import write_synthetic_l4s

        root = write_synthetic_l4s(tmp / "synthetic", n_patches=d.n_synthetic, seed=cfg.seed, size=d.synthetic_size)
        patches = load_patches(root, "train", layout="plain", require_masks=True)
        source = f"synthetic(n={d.n_synthetic}, size={d.synthetic_size}, seed={cfg.seed})"
    else:
        patches = load_patches(d.path, d.split, layout=d.layout, require_masks=True)
        source = str(d.path)
    if len(patches) < 2:
        raise ValueError(f"{d.path or 'synthetic data'}: {len(patches)} labelled patch(es); need at least 2 to train and validate")
    fp = fingerprint_array(np.asarray(patches.images), source=source)
    return patches, fp


# ------------------------------------------------------------------------------- one fold
@dataclass
class FoldResult:
    """One trained fold: its segmenter URI, validation/test metrics and out-of-fold rows."""

    fold: int
    model_uri: str
    threshold: float
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    oof: pd.DataFrame
    history: list[dict[str, float]] = field(default_factory=list)


def train_fold(cfg: TrainConfig, train_set: Any, test_set: Any | None, fold: int, *, log_flavour: bool = True) -> FoldResult:
    """Train on ``train_set`` (validation carved from it), evaluate on ``test_set``; logs to the active MLflow run."""
    import mlflow
    import torch

    from imagery.bands import BANDS
    from imagery.losses import build_criterion
    from imagery.models import create_model
    from imagery.serving import Segmenter, SegmenterMeta, log_segmenter
    from imagery.train import Preprocessor, Trainer, fit_normalizer, resolve_device

    device = resolve_device(cfg.device)
    tr_pos, va_pos = holdout_positions(train_set.ids, cfg.data.val_fraction, cfg.seed + fold, train_set.patch_labels())
    if len(va_pos) == 0 or len(tr_pos) == 0:
        raise ValueError(f"--val-fraction {cfg.data.val_fraction} leaves an empty split of {len(train_set)} patches")
    tr, va = train_set.subset(tr_pos), train_set.subset(va_pos)
    pre = Preprocessor(cfg.model.channel_set)
    with torch.no_grad():
        tx = pre.transform_all(np.asarray(tr.images), device)  # engineered once, normalised in place below
        pre.normalizer = fit_normalizer(cfg.data.normalize, tx)
        tx = pre.normalize(tx)
        vx = pre.transform_all(np.asarray(va.images), device)
    normalizer = pre.normalizer
    torch.manual_seed(cfg.seed + fold)
    model = create_model(cfg.model.name, **cfg.model.create_kwargs())
    loss_params = {"alpha": cfg.loss.alpha} if cfg.loss.name in LOSSES_WITH_ALPHA else {}
    criterion = build_criterion(cfg.loss.name, cfg.model.head, **loss_params)

    def log_epoch(metrics: dict[str, float], epoch: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _finite(v)}, step=epoch)

    result = Trainer(cfg, model, criterion, tx, tr.masks, vx, va.masks, device=device, log_metrics=log_epoch).fit()
    meta = SegmenterMeta(
        model_name=cfg.model.name,
        model_kwargs=cfg.model.create_kwargs(),
        channel_set=cfg.model.channel_set,
        threshold=result.threshold,
        normalizer=normalizer.to_dict() if normalizer is not None else None,
        band_order=list(BANDS),
        head=cfg.model.head,
        tta=cfg.tta,
        vote=cfg.vote,
        patch_size=int(tr.images.shape[-1]),
    )
    uri = log_segmenter(result.model, meta, input_example=vx[:1].detach().cpu().numpy(), log_flavour=log_flavour)
    val_metrics = segmentation_metrics(result.val_probs, va.masks, result.threshold, result.val_patch_probs)
    mlflow.log_metrics({f"val_{k}": v for k, v in val_metrics.items() if _finite(v)})
    mlflow.log_metrics({"threshold": result.threshold, "best_epoch": float(result.best_epoch + 1)})
    _log_threshold_table(result.threshold_table)
    _log_plots(cfg, va, result.val_probs, result.threshold)

    test_metrics: dict[str, float] = {}
    if test_set is not None and len(test_set):
        seg = Segmenter(result.model, meta, device)
        test_metrics, pred = evaluate_segmenter(seg, np.asarray(test_set.images), test_set.masks,
                                                batch_size=cfg.eval_batch_size)
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items() if _finite(v)})
        oof = oof_frame(test_set.ids, test_set.masks, pred["patch_prob"], fold)
    else:
        oof = oof_frame(va.ids, va.masks, result.val_patch_probs, fold)
    return FoldResult(fold, uri, result.threshold, val_metrics, test_metrics, oof, result.history)


def oof_frame(ids: np.ndarray, masks: np.ndarray, patch_probs: np.ndarray, fold: int) -> pd.DataFrame:
    """``oof_predictions.csv`` rows: region_id (patch id), y_true (any landslide pixel), p_oof, fold."""
    y = (np.asarray(masks).reshape(len(ids), -1).max(axis=1) > 0).astype(np.int64)
    return pd.DataFrame({"region_id": np.asarray(ids, dtype=np.int64), "y_true": y,
                         "p_oof": np.asarray(patch_probs, dtype=np.float64), "fold": int(fold)})


# ------------------------------------------------------------------------------- all folds
@dataclass
class FoldsResult:
    """A whole experiment: segmenter URIs (one per fold), summary metrics and the out-of-fold table."""

    model_uris: list[str]
    metrics: dict[str, float]
    oof: pd.DataFrame
    folds: list[FoldResult]


def run_folds(cfg: TrainConfig, tmp: Path, experiment: str) -> FoldsResult:
    """Run the experiment of ``cfg`` inside the active (parent) MLflow run; see the module docstring."""
    import mlflow

    from common.tracking import log_fingerprint, tracked_run

    patches, fp = load_training_data(cfg, tmp)
    log_fingerprint(fp)
    k = cfg.data.folds
    results: list[FoldResult] = []
    if k == 1:
        results.append(train_fold(cfg, patches, None, 0))
    else:
        if len(patches) < k:
            raise ValueError(f"--folds {k}: only {len(patches)} labelled patches")
        splits = kfold_positions(patches.ids, k, cfg.seed)
        wanted = range(k) if cfg.data.fold is None else [cfg.data.fold]
        for i in wanted:
            tr_pos, te_pos = splits[i]
            fold_cfg = _fold_config(cfg, i)
            with tracked_run(experiment, fold_cfg, run_name=f"fold{i}", nested=True, tags={"fold": str(i)}):
                mlflow.log_params({"fold_index": i, "n_train": len(tr_pos), "n_test": len(te_pos)})
                results.append(train_fold(fold_cfg, patches.subset(tr_pos), patches.subset(te_pos), i))
    oof = pd.concat([r.oof for r in results], ignore_index=True)[list(OOF_COLUMNS)]
    _log_csv(oof, "oof_predictions.csv")
    metrics = summarise(results)
    return FoldsResult([r.model_uri for r in results], metrics, oof, results)


def summarise(results: list[FoldResult]) -> dict[str, float]:
    """Mean and std (``<name>_mean``/``<name>_std``) of each fold's test (k-fold) or validation metrics."""
    source = [r.test_metrics or r.val_metrics for r in results]
    prefix = "test" if results and results[0].test_metrics else "val"
    out: dict[str, float] = {}
    for key in sorted(set().union(*source)) if source else []:
        vals = np.array([m[key] for m in source if key in m and _finite(m[key])], dtype=np.float64)
        if len(vals):
            out[f"{prefix}_{key}_mean"] = float(vals.mean())
            out[f"{prefix}_{key}_std"] = float(vals.std(ddof=0))
    return out


def _fold_config(cfg: TrainConfig, fold: int) -> TrainConfig:
    import copy

    c = copy.deepcopy(cfg)
    if c.checkpoint_dir:
        c.checkpoint_dir = str(Path(c.checkpoint_dir) / f"fold_{fold}")
    return c


def _finite(v: Any) -> bool:
    return isinstance(v, int | float | np.floating | np.integer) and math.isfinite(float(v))


# ------------------------------------------------------------------------------- artifacts
def _log_csv(df: pd.DataFrame, name: str) -> None:
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        df.to_csv(path, index=False)
        mlflow.log_artifact(str(path))


def _log_threshold_table(table: Any) -> None:
    if table is None:
        return
    try:
        df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    except (ValueError, TypeError):
        return
    _log_csv(df, "threshold_sweep.csv")


def _log_plots(cfg: TrainConfig, va: Any, probs: np.ndarray, threshold: float) -> None:
    """Overlay PNGs for up to ``cfg.n_overlays`` validation patches (positives first) and a PR curve."""
    import tempfile

    import mlflow

    from imagery.predict import save_overlay

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        labels = np.asarray(va.masks).reshape(len(va), -1).max(axis=1)
        order = np.argsort(-labels, kind="stable")[: cfg.n_overlays]
        for i in order:
            pred = (probs[i] > threshold).astype(np.uint8)
            save_overlay(folder / "overlays" / f"overlay_{int(va.ids[i])}.png", np.asarray(va.images[i]),
                         mask=va.masks[i], prob=probs[i], pred=pred)
        save_pr_curve(folder / "plots" / "pr_curve.png", probs, va.masks, threshold)
        mlflow.log_artifacts(str(folder))
