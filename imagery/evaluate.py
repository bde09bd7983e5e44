"""Evaluation of segmenters, and the train/validate/test protocol (single run or k-fold).

* :func:`evaluate_segmenter`: landslide-class precision/recall/F1/IoU accumulated over all pixels of
  a labelled set (``ls_*``), the seed's 2-class means (``*_2class``) and patch-level detection
  AUC/F1 (``patch_*``) for a :class:`imagery.serving.Segmenter`.
* :func:`run_folds`: the experiment behind ``python -m pipelines.train_imagery``. Per fold: carve a
  validation split from the training patches (``imagery.splits.holdout_split``), fit the
  normaliser on the training part, train (``imagery.train.Trainer``), tune the threshold on the
  validation split, log the segmenter (``imagery.serving.log_segmenter``), overlays and a
  precision-recall curve, then score the held-out test fold. Out-of-fold patch probabilities come
  from the test folds (k-fold) or from the validation split (single run, fold 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imagery.config import TrainConfig

OOF_COLUMNS = ("region_id", "y_true", "p_oof", "fold")
LOSSES_WITH_ALPHA = ("focal_iou", "ce_iou", "focal_iou_center")


# ------------------------------------------------------------------------------- metrics
def segmentation_metrics(
    probs: np.ndarray, masks: np.ndarray, threshold: float, patch_probs: np.ndarray | None = None,
    pred: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of one labelled set.

    Args:
        probs: ``(N, H, W)`` landslide probabilities; masks: ``(N, H, W)`` uint8 0/1 ground truth.
        threshold: landslide iff ``prob > threshold`` (ignored when ``pred`` is given).
        patch_probs: ``(N,)`` patch probabilities for the patch-level scores (``patch_*``).
        pred: ``(N, H, W)`` uint8 final masks (e.g. after morphology).
    """
    from imagery.metrics import SegmentationCounts

    masks = np.asarray(masks, dtype=np.uint8)
    pred = (np.asarray(probs) > threshold).astype(np.uint8) if pred is None else np.asarray(pred, np.uint8)
    counts = SegmentationCounts()
    counts.update(pred, masks)
    out = {k: float(v) for k, v in counts.compute().items()}
    if patch_probs is not None:
        from imagery.metrics import patch_detection_metrics

        labels = (masks.reshape(len(masks), -1).max(axis=1) > 0).astype(np.int64)
        patch = patch_detection_metrics(np.asarray(patch_probs, dtype=np.float64), labels, 0.5)
        out.update({(k if k.startswith("patch_") else f"patch_{k}"): float(v) for k, v in patch.items()
                    if isinstance(v, int | float | np.floating | np.integer)})
    return out


def evaluate_segmenter(
    segmenter: Any,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    batch_size: int = 16,
    tta: str | None = None,
    vote: bool | None = None,
    morphology: str | None = None,
    threshold: float | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of ``segmenter`` on raw patches ``(N, 14, H, W)`` with masks ``(N, H, W)``; also returns its predictions."""
    if masks is None:
        raise ValueError("evaluation needs masks, but the split has none (use pipelines.predict_imagery for unlabelled data)")
    pred = segmenter.predict(images, batch_size=batch_size, tta=tta, vote=vote, morphology=morphology,
                             threshold=threshold)
    t = segmenter.threshold if threshold is None else float(threshold)
    metrics = segmentation_metrics(pred["prob"], masks, t, pred["patch_prob"], pred=pred["mask"])
    metrics["threshold"] = t
    return metrics, pred


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
    normalizer = fit_normalizer(cfg.data.normalize, np.asarray(tr.images), cfg.model.channel_set)
    pre = Preprocessor(cfg.model.channel_set, normalizer)
    with torch.no_grad():
        tx = pre.transform_all(np.asarray(tr.images), device)
        vx = pre.transform_all(np.asarray(va.images), device)
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


def save_pr_curve(path: Path, probs: np.ndarray, masks: np.ndarray, threshold: float, max_pixels: int = 2_000_000) -> Path:
    """Pixel-level precision-recall curve of the landslide class (PNG, atomic), marking ``threshold``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from common.atomic import atomic_path

    y = np.asarray(masks).reshape(-1).astype(np.int64)
    p = np.asarray(probs).reshape(-1).astype(np.float64)
    if y.size > max_pixels:
        sel = np.random.default_rng(0).choice(y.size, max_pixels, replace=False)
        y, p = y[sel], p[sel]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    if y.any():
        prec, rec, thr = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=f"AP {average_precision_score(y, p):.3f}")
        j = int(np.searchsorted(thr, threshold)) if len(thr) else 0
        j = min(j, len(thr) - 1) if len(thr) else 0
        if len(thr):
            ax.scatter([rec[j]], [prec[j]], color="red", zorder=3, label=f"t = {threshold:.2f}")
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "no landslide pixels", ha="center")
    ax.set_xlabel("recall (landslide pixels)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)


__all__ = [
    "FoldResult",
    "FoldsResult",
    "OOF_COLUMNS",
    "evaluate_segmenter",
    "holdout_positions",
    "kfold_positions",
    "load_training_data",
    "oof_frame",
    "run_folds",
    "save_pr_curve",
    "segmentation_metrics",
    "summarise",
    "train_fold",
]
