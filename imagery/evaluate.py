"""Evaluation of segmenters on labelled patches.

* :func:`evaluate_segmenter`: landslide-class precision/recall/F1/IoU accumulated over all pixels of
  a labelled set (``ls_*``), the seed's 2-class means (``*_2class``) and patch-level detection
  AUC/F1 (``patch_*``) for a :class:`imagery.serving.Segmenter`.
* :func:`save_pr_curve`: the pixel-level precision-recall curve as a PNG.

The train/validate/test protocol (single run or k-fold) is in :mod:`imagery.experiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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


__all__ = ["LOSSES_WITH_ALPHA", "OOF_COLUMNS", "evaluate_segmenter", "save_pr_curve", "segmentation_metrics"]
