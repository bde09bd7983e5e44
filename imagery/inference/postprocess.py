"""Inference-time post-processing (spec ``rau-net.md`` section 10).

* :func:`predict_probs`: landslide probability ``(B, H, W)`` at the 128-px (input) resolution and the
  patch probability ``(B,)``, with optional multi-angle test-time augmentation (``tta="rot4"``:
  0/90/180/270 degrees; ``"rot4flip"``: the same plus their horizontal flips, 8 views) and optional
  voting over the multi-resolution outputs (``vote=True``: softmax maps at 256 and 64 px resized
  bilinearly to H x W and averaged equally with the 128-px map).
* :func:`apply_threshold`: landslide iff ``p > t``.
* :func:`morphology`: binary opening / closing with a square kernel (OpenCV, on the CPU).
* :func:`sweep_thresholds` / :class:`ThresholdSweep`: landslide-class F1 at every threshold of a grid
  (default 0.30 ... 0.99), accumulated over all pixels, in one pass (bucketise each probability by the
  grid, bincount per class, reversed cumulative sums).
"""

from __future__ import annotations

import contextlib

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from common.cli import UserError
from imagery.data.patches import IGNORE
from imagery.inference.config import TTA_MODES
from imagery.models.heads import main_output_only, patch_probability

DEFAULT_THRESHOLDS = np.round(np.arange(0.30, 0.995, 0.01), 2)


def _landslide_prob(outputs: dict[str, torch.Tensor], size: tuple[int, int], vote: bool) -> torch.Tensor:
    prob = torch.softmax(outputs["out"].float(), dim=1)[:, 1]
    if not vote:
        return prob
    if "out_256" not in outputs or "out_64" not in outputs:
        raise UserError("vote=True needs a model with head='multires' (outputs out_256 and out_64)")
    maps = [prob]
    for key in ("out_256", "out_64"):
        p = torch.softmax(outputs[key].float(), dim=1)[:, 1:2]
        maps.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False)[:, 0])
    return torch.stack(maps).mean(dim=0)


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, tta: str = "none", vote: bool = False) -> dict[str, torch.Tensor]:
    """Landslide probabilities for a batch ``x`` ``(B, C, H, W)`` (on the model's device).

    Returns ``{"prob": (B, H, W) float32 in [0, 1], "patch_prob": (B,) float32}``. With TTA each view
    is predicted, its probability map is rotated/flipped back and the maps are averaged; the patch
    probability (:func:`imagery.models.patch_probability`) is averaged over the views too. The model's
    train/eval mode is left as it is: call ``model.eval()`` first. TTA rotations need H == W.
    """
    if tta not in TTA_MODES:
        raise UserError(f"tta={tta!r}: expected one of {', '.join(TTA_MODES)}")
    if x.ndim != 4:
        raise ValueError(f"input shape {tuple(x.shape)}: expected (B, C, H, W)")
    size = (x.shape[-2], x.shape[-1])
    if tta != "none" and size[0] != size[1]:
        raise UserError(f"tta={tta!r} rotates the patch: expected a square input, got {size[0]}x{size[1]}")
    views = [(k, False) for k in (range(4) if tta != "none" else [0])]
    if tta == "rot4flip":
        views += [(k, True) for k in range(4)]
    probs, patch = [], []
    for k, flip in views:
        xv = torch.rot90(x, k, dims=(2, 3)) if k else x
        xv = torch.flip(xv, dims=(3,)) if flip else xv
        with contextlib.nullcontext() if vote else main_output_only():  # vote reads the 256 / 64 px maps
            outputs = model(xv)
        p = _landslide_prob(outputs, size, vote)
        p = torch.flip(p, dims=(2,)) if flip else p
        probs.append(torch.rot90(p, -k, dims=(1, 2)) if k else p)
        patch.append(patch_probability(outputs))
    return {"prob": torch.stack(probs).mean(dim=0), "patch_prob": torch.stack(patch).mean(dim=0)}


def apply_threshold(prob: torch.Tensor | np.ndarray, t: float) -> torch.Tensor | np.ndarray:
    """Binary landslide mask ``prob > t`` as uint8 0/1 (same container type and shape as ``prob``)."""
    if not 0.0 <= float(t) <= 1.0:
        raise UserError(f"threshold {t}: expected a value in [0, 1]")
    if isinstance(prob, torch.Tensor):
        return (prob > t).to(torch.uint8)
    return (np.asarray(prob) > t).astype(np.uint8)


def morphology(mask: torch.Tensor | np.ndarray, op: str | None, kernel: int = 4) -> torch.Tensor | np.ndarray:
    """Binary opening (``"open"``) or closing (``"close"``) of ``(H, W)`` or ``(B, H, W)`` 0/1 masks with
    a ``kernel x kernel`` square (OpenCV erode/dilate on the CPU;
    opening does not erode from the image border, closing treats outside the image as background);
    ``op=None`` returns the mask unchanged. Returns uint8 0/1 of the input's type, shape and device.

    With an even kernel (the spec's 4x4) ``cv2.morphologyEx`` uses the same anchor for both steps and
    so shifts the result by one pixel; here the second step uses the reflected anchor, so that the
    opening is contained in the mask and the closing contains it, as the definitions require.
    """
    if op is None:
        return mask
    if op not in ("open", "close"):
        raise UserError(f"morphology op={op!r}: expected 'open', 'close' or None")
    if kernel < 1:
        raise ValueError(f"morphology kernel={kernel}: expected a positive size")
    device = mask.device if isinstance(mask, torch.Tensor) else None
    arr = (mask.detach().cpu().numpy() if device is not None else np.asarray(mask)) != 0
    if arr.ndim not in (2, 3):
        raise ValueError(f"mask shape {arr.shape}: expected (H, W) or (B, H, W)")
    batch = arr.reshape((-1,) + arr.shape[-2:]).astype(np.uint8)
    k = np.ones((kernel, kernel), np.uint8)
    a = kernel // 2
    first, second = (cv2.erode, cv2.dilate) if op == "open" else (cv2.dilate, cv2.erode)
    pad = kernel if op == "close" else 0  # closing: outside the image is background, not foreground
    padded = [cv2.copyMakeBorder(m, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0) for m in batch]
    res = [second(first(m, k, anchor=(a, a)), k, anchor=(kernel - 1 - a, kernel - 1 - a)) for m in padded]
    out = np.stack([r[pad : r.shape[0] - pad, pad : r.shape[1] - pad] for r in res]).reshape(arr.shape)
    return torch.from_numpy(out).to(device) if device is not None else out


class ThresholdSweep:
    """Streaming landslide-class F1 over a threshold grid; ``update(prob, mask)`` per batch (mask pixels equal to
    ``IGNORE`` are left out).

    A pixel is predicted landslide at threshold t iff ``p > t``. Each probability is bucketised by the
    sorted grid (number of thresholds strictly below it) and counted per true class, so TP(t_j) and
    FP(t_j) are reversed cumulative sums of the bucket counts: exact, one pass, no loop over thresholds.
    """

    def __init__(self, thresholds: np.ndarray | list[float] = DEFAULT_THRESHOLDS) -> None:
        t = np.asarray(thresholds, dtype=np.float64)
        if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0):
            raise ValueError("thresholds: expected a non-empty, strictly increasing 1-D grid")
        self.thresholds = t
        self.pos = np.zeros(t.size + 1, dtype=np.int64)
        self.neg = np.zeros(t.size + 1, dtype=np.int64)

    def update(self, prob: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> None:
        p = prob.detach().float().cpu().numpy() if isinstance(prob, torch.Tensor) else np.asarray(prob)
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if p.shape != m.shape:
            raise ValueError(f"probability shape {p.shape} != mask shape {m.shape}")
        valid = m.ravel() != IGNORE  # unlabelled pixels count for no threshold
        bins = np.searchsorted(self.thresholds, p.ravel()[valid].astype(np.float64), side="left")
        y = m.ravel()[valid] == 1
        self.pos += np.bincount(bins[y], minlength=self.pos.size)
        self.neg += np.bincount(bins[~y], minlength=self.neg.size)

    def table(self) -> pd.DataFrame:
        """Per threshold: ``threshold, ls_precision, ls_recall, ls_f1, ls_iou, tp, fp, fn`` (1.0 for an
        empty denominator, as in :mod:`imagery.inference.metrics`)."""
        # pixels with bucket index i are > thresholds[j] for every j < i
        tp = np.cumsum(self.pos[::-1])[::-1][1:]
        fp = np.cumsum(self.neg[::-1])[::-1][1:]
        fn = self.pos.sum() - tp

        def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
            return np.where(den == 0, 1.0, num / np.maximum(den, 1))

        return pd.DataFrame(
            {
                "threshold": self.thresholds,
                "ls_precision": ratio(tp, tp + fp),
                "ls_recall": ratio(tp, tp + fn),
                "ls_f1": ratio(2 * tp, 2 * tp + fp + fn),
                "ls_iou": ratio(tp, tp + fp + fn),
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }
        )

    def best(self) -> tuple[float, pd.DataFrame]:
        """(threshold with the highest landslide F1, the smallest one on ties; the full table)."""
        table = self.table()
        return float(table["threshold"].iloc[int(np.argmax(table["ls_f1"].to_numpy()))]), table


def sweep_thresholds(
    probs: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray,
    thresholds: np.ndarray | list[float] = DEFAULT_THRESHOLDS,
) -> tuple[float, pd.DataFrame]:
    """Best threshold for landslide-class F1 over all pixels of ``probs`` / ``masks`` (same shape,
    e.g. ``(N, H, W)``), and the table of :meth:`ThresholdSweep.table`."""
    sweep = ThresholdSweep(thresholds)
    sweep.update(probs, masks)
    return sweep.best()
