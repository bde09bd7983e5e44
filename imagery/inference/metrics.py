"""Segmentation and patch-detection metrics (spec ``rau-net.md`` section 11).

Definitions (README-ready). Pixel counts are accumulated over **all pixels of the evaluated set**
(micro average, as the official Landslide4Sense evaluation does), with landslide = positive class:
TP, FP, FN, TN.

* ``ls_precision`` = TP / (TP + FP); ``ls_recall`` = TP / (TP + FN);
  ``ls_f1`` = 2TP / (2TP + FP + FN); ``ls_iou`` = TP / (TP + FP + FN). These are the primary numbers.
* ``bg_f1`` = 2TN / (2TN + FN + FP); ``bg_iou`` = TN / (TN + FN + FP) (background as the positive class).
* ``f1_2class_mean`` = (bg_f1 + ls_f1) / 2 and ``miou_2class`` = (bg_iou + ls_iou) / 2: the seed study's
  reported "F1" and "mIoU" (macro over the 2 classes, micro over pixels); only for comparison with its
  tables, they are much higher than the landslide-class scores.
* ``pixel_accuracy`` = (TP + TN) / all pixels.
* Empty denominators: every score is 1.0 when its denominator is 0, exactly as the authors' code does
  for the 2-class scores. For the landslide scores this means: no predicted landslide pixel gives
  precision 1.0 (no false alarm); no true landslide pixel gives recall 1.0; F1 and IoU are 1.0 only
  when there is no landslide pixel in either the prediction or the truth.
* Ignored pixels: a target value of :data:`imagery.data.patches.IGNORE` (255) marks an unlabelled pixel;
  it counts in none of TP, FP, FN, TN (nor in any score), whatever is predicted there.
* Patch detection (:func:`patch_detection_metrics`): a patch is positive when its mask has at least
  one landslide pixel; ``patch_auc`` = ROC AUC of the patch probabilities (NaN when only one class is
  present), ``patch_precision`` / ``patch_recall`` / ``patch_f1`` at ``threshold`` (prob >= threshold;
  0 when undefined, scikit-learn ``zero_division=0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.metrics import binary_metrics
from imagery.data.patches import IGNORE


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else float(num) / float(den)


def _as_bool(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor | np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach() != 0
    return np.asarray(x) != 0


@dataclass
class SegmentationCounts:
    """Accumulator of landslide-vs-background pixel counts over an evaluated set.

    ``update(pred, target)`` takes ``(B, H, W)`` (or any equal shapes) 0/1 int/bool tensors or arrays
    (nonzero = landslide); torch tensors are counted on their own device. ``compute()`` returns the
    dict of scores defined in the module docstring plus the raw counts ``tp, fp, fn, tn``.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        p = _as_bool(pred, "pred")
        if isinstance(target, torch.Tensor):
            v, t = target.detach() != IGNORE, target.detach() == 1
        else:
            tgt = np.asarray(target)
            v, t = tgt != IGNORE, tgt == 1
        if isinstance(p, torch.Tensor) != isinstance(t, torch.Tensor):
            p = p.cpu().numpy() if isinstance(p, torch.Tensor) else p
            t = t.cpu().numpy() if isinstance(t, torch.Tensor) else t
            v = v.cpu().numpy() if isinstance(v, torch.Tensor) else v
        if isinstance(p, torch.Tensor):
            t, v = t.to(p.device), v.to(p.device)
            pv = p & v
            counts = torch.stack([(pv & t).sum(), (pv & ~t).sum(), (~p & t).sum(), v.sum()]).cpu().tolist()
        else:
            pv = p & v
            counts = [
                int(np.count_nonzero(pv & t)),
                int(np.count_nonzero(pv & ~t)),
                int(np.count_nonzero(~p & t)),
                int(np.count_nonzero(v)),
            ]
        tp, fp, fn, n_valid = (int(c) for c in counts)
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.tn += n_valid - tp - fp - fn

    def reset(self) -> None:
        """Zero all counts."""
        self.tp = self.fp = self.fn = self.tn = 0

    def compute(self) -> dict[str, float]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        scores = {
            "ls_precision": _ratio(tp, tp + fp),
            "ls_recall": _ratio(tp, tp + fn),
            "ls_f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "ls_iou": _ratio(tp, tp + fp + fn),
            "bg_f1": _ratio(2 * tn, 2 * tn + fp + fn),
            "bg_iou": _ratio(tn, tn + fp + fn),
            "pixel_accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        }
        scores["f1_2class_mean"] = (scores["bg_f1"] + scores["ls_f1"]) / 2
        scores["miou_2class"] = (scores["bg_iou"] + scores["ls_iou"]) / 2
        scores.update(tp=float(tp), fp=float(fp), fn=float(fn), tn=float(tn))
        return scores


def patch_detection_metrics(
    patch_prob: np.ndarray | torch.Tensor, patch_label: np.ndarray | torch.Tensor, threshold: float = 0.5
) -> dict[str, float]:
    """Patch-level detection scores from probabilities ``(N,)`` and 0/1 labels ``(N,)``.

    Returns ``patch_auc`` (NaN when the labels hold one class only), ``patch_f1``, ``patch_precision``,
    ``patch_recall`` at ``prob >= threshold``, plus ``patch_pr_auc`` and ``patch_brier``
    (:func:`common.metrics.binary_metrics`).
    """
    prob = patch_prob.detach().cpu().numpy() if isinstance(patch_prob, torch.Tensor) else np.asarray(patch_prob)
    label = patch_label.detach().cpu().numpy() if isinstance(patch_label, torch.Tensor) else np.asarray(patch_label)
    if prob.size != label.size:
        raise ValueError(f"patch_prob has {prob.size} values but patch_label has {label.size}; expected equal")
    scores = binary_metrics(
        (label.ravel() != 0).astype(int), prob.ravel().astype(np.float64), threshold, prefix="patch_"
    )
    scores["patch_auc"] = scores.pop("patch_roc_auc")
    return scores


def segmentation_metrics(
    probs: np.ndarray,
    masks: np.ndarray,
    threshold: float,
    patch_probs: np.ndarray | None = None,
    pred: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of one labelled set.

    Args:
        probs: ``(N, H, W)`` landslide probabilities; masks: ``(N, H, W)`` uint8 0/1 ground truth
            (:data:`~imagery.data.patches.IGNORE` pixels excluded).
        threshold: landslide iff ``prob > threshold`` (ignored when ``pred`` is given).
        patch_probs: ``(N,)`` patch probabilities for the patch-level scores (``patch_*``).
        pred: ``(N, H, W)`` uint8 final masks (e.g. after morphology).
    """
    masks = np.asarray(masks, dtype=np.uint8)
    pred = (np.asarray(probs) > threshold).astype(np.uint8) if pred is None else np.asarray(pred, np.uint8)
    counts = SegmentationCounts()
    counts.update(pred, masks)
    out = {k: float(v) for k, v in counts.compute().items()}
    if patch_probs is not None:
        labels = (masks.reshape(len(masks), -1) == 1).any(axis=1).astype(np.int64)
        patch = patch_detection_metrics(np.asarray(patch_probs, dtype=np.float64), labels, 0.5)
        out.update(patch)
    return out
