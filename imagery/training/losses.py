"""Segmentation losses selectable by name (spec ``rau-net.md`` section 8).

Every loss is an ``nn.Module`` with ``forward(logits (B, K, H, W) float, target (B, H, W) long) -> scalar``
(K = 2: background 0, landslide 1). Notation: ``p = softmax(logits)`` per pixel, ``y`` the one-hot target,
``t`` the true class, N = B*H*W pixels, sums run over all pixels of the batch (the authors' "whole batch"
convention, not per image). Formulas:

* ``ce``: ``mean_i -log p_{i,t_i}`` (optional per-class ``weight``, as ``F.cross_entropy``). The authors'
  ``EntropyLoss`` is half of it (a mean over N*K); the constant factor leaves Adam's steps unchanged.
* ``focal`` (authors' code): ``sum_i (1 - p_t)^gamma * (-log p_t) / (N * K)`` with p clipped to
  [1e-7, 1 - 1e-7], gamma 2, no alpha_t (optional ``alpha`` per-class weights). The division by N*K
  (the Keras mean over all B*H*W*K elements) makes it half the per-pixel mean for K = 2.
* ``iou`` (soft Jaccard, authors' code): ``I_c = sum y_c p_c``, ``U_c = sum (y_c + p_c) - I_c``,
  ``L = mean_c -log((I_c + 1e-7) / (U_c + 1e-7))`` over both classes (``classes="landslide"``: c = 1 only).
* ``dice``: ``L = 1 - mean_c (2 I_c + s) / (sum y_c + sum p_c + s)``, s = ``smooth`` (default 1).
* ``log_cosh_dice`` (Jadon 2020, log-cosh dice): ``L = log(cosh(L_dice))``.
* ``tversky_landslide`` (Salehi 2017): ``TI_c = (TP_c + s) / (TP_c + a FP_c + b FN_c + s)`` with soft
  ``TP_c = sum y_c p_c``, ``FP_c = sum (1-y_c) p_c``, ``FN_c = sum y_c (1-p_c)``; ``L = 1 - mean_c TI_c``;
  defaults a 0.3, b 0.7 (false negatives cost more), s 1e-7, landslide class only.
* ``lovasz_softmax`` (Lovasz-softmax, Berman et al. 2018): for each class c (default: the classes present in
  the target), errors ``e_i = |y_ic - p_ic|`` sorted in decreasing order (permutation pi),
  ``L_c = sum_k e_{pi(k)} * g_k`` with ``g`` the gradient of the Lovasz extension of the Jaccard loss,
  ``J_k = 1 - (G - cumsum(y_pi)_k) / (G + cumsum(1 - y_pi)_k)``, ``g_1 = J_1``, ``g_k = J_k - J_{k-1}``,
  G = sum_i y_ic; ``L = mean_c L_c``.
* ``boundary_weighted`` (boundary-weighted focal/CE): boundary map ``b_i = dilate(y1) - erode(y1)``
  (morphological gradient of the landslide mask with a ``kernel`` x ``kernel`` square, max-pool on the tensor's
  device), ``w_i = 1 + lam * b_i``, ``L = sum_i w_i l_i / sum_i w_i`` with ``l_i = (1 - p_t)^gamma (-log p_t)``
  (gamma 0 = CE; defaults lam 4, kernel 3).
* ``center_weighted`` (centre-weighted CE, the centre weighting the deck describes): ``d_i`` = Euclidean
  distance of a landslide pixel to the nearest background pixel (OpenCV distance transform), divided by the
  maximum of d over its 8-connected blob, so every blob's centre has weight 1 + lam and its rim about
  1 + lam/dmax; background ``d_i = 0``; ``w_i = 1 + lam * d_i``, ``L = sum_i w_i l_i / sum_i w_i``
  (default lam 4, gamma 0).

The seed study's losses under the deck's names (:data:`STUDY_LOSSES`; the authors' ``losses.py``, HEAD of
CamDucLe/Landslide-Project-Sentinel2, read as formulas). Every one takes the softmax probabilities; ``pc`` is
p clipped to [1e-7, 1 - 1e-7]; "mean over N*K" divides a sum over pixels and both classes by N*K (Keras'
``reduce_mean`` over ``(B, H, W, 2)``):

* ``log_cosh``: ``sum_i sum_c w_c log(cosh((pc_ic - y_ic)^2)) / (N*K)`` with the background weight
  ``w_0 = 0.8`` (``bg_weight``) and ``w_1 = 1``. (Not log-cosh dice: that is ``log_cosh_dice``.)
* ``tversky``: ``mean_c -log((TP_c + e) / (TP_c + 0.75 FP_c + 0.75 FN_c + e))`` over **both** classes, soft
  counts summed over all pixels of the batch (unclipped p), e = 1e-7. (The literature's ``1 - TI`` on the
  landslide class with a 0.3 / b 0.7 is ``tversky_landslide``.)
* ``lovasz``: for each class c (both, present or not): errors ``e_i = sqrt(|y_ic - pc_ic|)`` sorted
  decreasingly; increments of ``J_k = -log((I_k + e) / (U_k + e))`` with ``I_k = G - cumsum(y_pi)_k``,
  ``U_k = G + cumsum(1 - y_pi)_k`` (``g_1 = J_1``, ``g_k = J_k - J_{k-1}``, no gradient through g);
  ``L_c = sum_k relu(e_pi(k)) g_k``; ``L = mean_c L_c``. (The published loss is ``lovasz_softmax``.)
* ``boundary``: ``sum_i W_{i,t_i} (-log pc_{i,t_i}) / (N*K)``. Per image that holds both classes, with
  ``D1 = EDT(y) + 1`` and ``D0 = EDT(1 - y) + 1`` (exact Euclidean distance to the nearest pixel of the other
  class, plus 1): a landslide pixel weighs ``max(D1)`` when ``D1 < 4.5`` (within 3.5 px of the background) and
  1 otherwise; **every** background pixel weighs ``0.8 * max(D0)`` (``scale``; the authors' test reads the
  landslide map there, which is 0 on background, so the "near the boundary" condition is always true). An
  image with one class only weighs 1 everywhere. (A boundary-band weighting is ``boundary_weighted``.)
* ``center``: as trained it is ``sum_i (-log pc_{i,t_i}) / (N*K)``, cross-entropy halved: the authors'
  centre loss computes distance maps but weights by the one-hot masks themselves. The centre weighting the
  deck describes is ``center_weighted``.

* Mixtures (:data:`MIXTURE_LOSSES`; ``mix`` is their mixing weight, the deck's alpha, not the focal
  loss's per-class ``alpha``): ``focal_iou``: ``mix * Focal + (1 - mix) * IoU``, mix 0.5: the
  authors' code (Focal + IoU, 1:1) up to a factor 2. ``ce_iou``: ``mix * CE + (1 - mix) * IoU``.
  ``focal_iou_center`` (the project's): ``mix * Focal + (1 - mix) * IoU + center_weight * center_weighted``
  (0.5, 0.5).

Ignored pixels (target == :data:`imagery.data.patches.IGNORE`, 255: unlabelled chip pixels, padding) take no
part in any loss: every formula above runs over the *labelled* pixels only, so N is their count, the soft
sums ``I_c``, ``U_c``, ``TP_c`` ... and the Lovasz sort only see them, and the weighted losses give them
weight 0. On a batch without ignored pixels every loss is unchanged; on one without any labelled pixel it is
0 (with a gradient of zeros).

Wrappers for model output dicts: :class:`MultiResLoss` (0.25/0.5/0.25 over the 256/128/64 outputs;
targets resized by nearest neighbour), :class:`OutLoss` (``"out"`` only), :class:`DualLoss` (adds BCE on
``patch_logit`` vs "mask has a landslide pixel"); :func:`build_criterion` picks the one for a head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from common.cli import UserError
from imagery.data.patches import IGNORE

EPS = 1e-7


def _valid(target: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the labelled pixels (target != IGNORE)."""
    return target != IGNORE


def _clean(target: torch.Tensor) -> torch.Tensor:
    """The target with ignored pixels set to background (they are masked out wherever it is used)."""
    return torch.where(_valid(target), target, torch.zeros_like(target)).long()


def _zero(logits: torch.Tensor) -> torch.Tensor:
    """A zero loss that keeps the graph (a batch with no labelled pixel)."""
    return logits.sum() * 0.0


def _labelled(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Check the shapes; the labelled-pixel mask (B, H, W) and its count N."""
    _check(logits, target)
    valid = _valid(target)
    return valid, int(valid.sum())


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if (
        logits.ndim != 4
        or target.ndim != 3
        or logits.shape[0] != target.shape[0]
        or logits.shape[2:] != target.shape[1:]
    ):
        raise ValueError(
            f"logits {tuple(logits.shape)} / target {tuple(target.shape)}: expected "
            "(B, K, H, W) logits and a (B, H, W) target of the same B, H, W"
        )


def _onehot(target: torch.Tensor, k: int) -> torch.Tensor:
    """(B, H, W) long -> (B, K, H, W) float one-hot."""
    return F.one_hot(target.long(), k).permute(0, 3, 1, 2).to(torch.float32)


def _class_index(classes: str, k: int) -> list[int]:
    if classes == "both" or classes == "all":
        return list(range(k))
    if classes == "landslide":
        return [1]
    raise ValueError(f"classes={classes!r}: expected 'both' or 'landslide'")


def _focal_terms(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha: tuple[float, ...] | None = None
) -> torch.Tensor:
    """Per-pixel ``(1 - p_t)^gamma * (-log p_t)`` (B, H, W), p clipped to [1e-7, 1 - 1e-7]."""
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, target.long()[:, None]).squeeze(1)
    logp_t = logp_t.clamp(float(np.log(EPS)), float(np.log1p(-EPS)))
    terms = -logp_t
    if gamma:
        terms = terms * (1.0 - logp_t.exp()) ** gamma
    if alpha is not None:
        terms = terms * torch.as_tensor(alpha, dtype=terms.dtype, device=terms.device)[target.long()]
    return terms


class CrossEntropyLoss(nn.Module):
    """Pixel-mean cross-entropy (optional per-class ``weight``)."""

    def __init__(self, weight: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(logits, target)
        if not bool(_valid(target).any()):
            return _zero(logits)
        w = None if self.weight is None else torch.as_tensor(self.weight, dtype=torch.float32, device=logits.device)
        return F.cross_entropy(logits.float(), target.long(), weight=w, ignore_index=IGNORE)


class FocalLoss(nn.Module):
    """Authors' focal loss: ``sum (1-p_t)^gamma (-log p_t) / (B*H*W*K)``, p clipped at 1e-7."""

    def __init__(self, gamma: float = 2.0, alpha: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid, n = _labelled(logits, target)
        if n == 0:
            return _zero(logits)
        terms = _focal_terms(logits, _clean(target), self.gamma, self.alpha)
        return terms[valid].sum() / (n * logits.shape[1])


def _clipped_probs(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities clipped to [1e-7, 1 - 1e-7], as the authors' losses do."""
    return torch.softmax(logits.float(), dim=1).clamp(EPS, 1.0 - EPS)


class _Region(nn.Module):
    """Soft per-class sums over the batch: returns (p, y) as (K, N) for the selected classes."""

    def __init__(self, classes: str) -> None:
        super().__init__()
        self.classes = classes

    def _py(self, logits: torch.Tensor, target: torch.Tensor, clip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``clip``: p clipped to [1e-7, 1 - 1e-7] (:func:`_clipped_probs`)."""
        _check(logits, target)
        k = logits.shape[1]
        idx = _class_index(self.classes, k)
        probs = _clipped_probs(logits) if clip else torch.softmax(logits.float(), dim=1)
        p = probs[:, idx].transpose(0, 1).flatten(1)
        y = _onehot(_clean(target), k)[:, idx].transpose(0, 1).flatten(1)
        valid = _valid(target).flatten()
        if not bool(valid.all()):  # labelled pixels only: the sums and sorts below never see ignored ones
            p, y = p[:, valid], y[:, valid]
        return p, y


class SoftIoULoss(_Region):
    """``mean_c -log((I_c + eps) / (U_c + eps))`` (authors' code; eps 1e-7, both classes)."""

    def __init__(self, classes: str = "both", eps: float = EPS) -> None:
        super().__init__(classes)
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, y = self._py(logits, target)
        inter = (p * y).sum(1)
        union = (p + y).sum(1) - inter
        return (-torch.log((inter + self.eps) / (union + self.eps))).mean()


class DiceLoss(_Region):
    """``1 - mean_c (2 I_c + s) / (sum y_c + sum p_c + s)`` (soft dice, smooth s)."""

    def __init__(self, classes: str = "both", smooth: float = 1.0) -> None:
        super().__init__(classes)
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, y = self._py(logits, target)
        dice = (2 * (p * y).sum(1) + self.smooth) / (y.sum(1) + p.sum(1) + self.smooth)
        return 1.0 - dice.mean()


class LogCoshDiceLoss(DiceLoss):
    """``log(cosh(L_dice))`` (Jadon 2020)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.cosh(super().forward(logits, target)))


class TverskyLoss(_Region):
    """``1 - mean_c (TP + s) / (TP + a FP + b FN + s)`` (soft counts; a 0.3, b 0.7, landslide class)."""

    def __init__(self, a: float = 0.3, b: float = 0.7, classes: str = "landslide", smooth: float = EPS) -> None:
        super().__init__(classes)
        self.a, self.b, self.smooth = a, b, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, y = self._py(logits, target)
        tp = (p * y).sum(1)
        fp = (p * (1 - y)).sum(1)
        fn = (y * (1 - p)).sum(1)
        ti = (tp + self.smooth) / (tp + self.a * fp + self.b * fn + self.smooth)
        return 1.0 - ti.mean()


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. errors sorted decreasingly."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


class LovaszSoftmaxLoss(_Region):
    """Lovasz-softmax over all pixels of the batch (Berman et al. 2018), see module docstring.

    ``classes="present"`` (default) averages over the classes present in the target, ``"both"`` over all.
    """

    def __init__(self, classes: str = "present") -> None:
        super().__init__("both")
        if classes not in ("present", "both"):
            raise ValueError(f"classes={classes!r}: expected 'present' or 'both'")
        self.only_present = classes == "present"

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, y = self._py(logits, target)
        losses = []
        for c in range(p.shape[0]):
            if self.only_present and y[c].sum() == 0:
                continue
            errors = (y[c] - p[c]).abs()
            errors_sorted, perm = torch.sort(errors, descending=True)
            losses.append(torch.dot(errors_sorted, lovasz_grad(y[c][perm])))
        if not losses:
            return p.sum() * 0.0
        return torch.stack(losses).mean()


def boundary_map(target: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Morphological gradient (dilation - erosion) of the landslide mask: (B, H, W) float 0/1."""
    y = (target == 1).float()[:, None]
    pad = kernel // 2
    dil = F.max_pool2d(F.pad(y, (pad, kernel - 1 - pad, pad, kernel - 1 - pad), mode="replicate"), kernel, 1)
    ero = -F.max_pool2d(F.pad(-y, (pad, kernel - 1 - pad, pad, kernel - 1 - pad), mode="replicate"), kernel, 1)
    return (dil - ero)[:, 0]


def center_map(target: torch.Tensor) -> torch.Tensor:
    """Per-blob normalised distance to background, (B, H, W) float in [0, 1] (1 at each blob's centre).

    Computed with OpenCV on the CPU (L2 distance transform, 5x5 mask; 8-connected components).
    """
    masks = (target == 1).detach().to("cpu", torch.uint8).numpy()
    out = np.zeros(masks.shape, dtype=np.float32)
    for b, m in enumerate(masks):
        if not m.any():
            continue
        padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)  # image edge = background
        dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
        n, labels = cv2.connectedComponents(m, connectivity=8)
        peak = np.zeros(n, dtype=np.float32)
        np.maximum.at(peak, labels.ravel(), dist.ravel())
        peak[0] = 1.0
        out[b] = dist / np.maximum(peak[labels], 1e-12)
    return torch.from_numpy(out).to(target.device)


class _WeightedPixelLoss(nn.Module):
    """``sum_i w_i (1 - p_t)^gamma (-log p_t) / sum_i w_i`` with ``w = 1 + lam * weight_map(target)``."""

    def __init__(self, lam: float = 4.0, gamma: float = 0.0) -> None:
        super().__init__()
        self.lam, self.gamma = lam, gamma

    def weight_map(self, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid, n = _labelled(logits, target)
        if n == 0:
            return _zero(logits)
        clean = _clean(target)
        w = (1.0 + self.lam * self.weight_map(clean)) * valid
        return (w * _focal_terms(logits, clean, self.gamma)).sum() / w.sum()


class BoundaryWeightedLoss(_WeightedPixelLoss):
    """Boundary-weighted CE/focal: ``w = 1 + lam * (dilate(y) - erode(y))`` (kernel x kernel square)."""

    def __init__(self, lam: float = 4.0, gamma: float = 0.0, kernel: int = 3) -> None:
        super().__init__(lam, gamma)
        self.kernel = kernel

    def weight_map(self, target: torch.Tensor) -> torch.Tensor:
        return boundary_map(target, self.kernel)


class CenterWeightedLoss(_WeightedPixelLoss):
    """Centre-weighted CE/focal: ``w = 1 + lam * d / max_blob(d)`` on landslide pixels, 1 elsewhere."""

    def weight_map(self, target: torch.Tensor) -> torch.Tensor:
        return center_map(target)


# ------------------------------------------------------------------ the seed study's losses (authors' formulas)
class StudyLogCoshLoss(nn.Module):
    """Authors' ``log_cosh``: ``sum_i sum_c w_c log(cosh((pc_ic - y_ic)^2)) / (N*K)``, w = (0.8, 1)."""

    def __init__(self, bg_weight: float = 0.8) -> None:
        super().__init__()
        self.bg_weight = float(bg_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid, n = _labelled(logits, target)
        if n == 0:
            return _zero(logits)
        k = logits.shape[1]
        p = _clipped_probs(logits)
        y = _onehot(_clean(target), k)
        w = torch.ones(k, dtype=p.dtype, device=p.device)
        w[0] = self.bg_weight
        terms = torch.log(torch.cosh((p - y) ** 2)) * w[None, :, None, None]
        return (terms * valid[:, None]).sum() / (n * k)


class StudyTverskyLoss(_Region):
    """Authors' ``tversky``: ``mean_c -log((TP_c + e) / (TP_c + a FP_c + b FN_c + e))``, both classes, a = b = 0.75."""

    def __init__(self, a: float = 0.75, b: float = 0.75, eps: float = EPS) -> None:
        super().__init__("both")
        self.a, self.b, self.eps = float(a), float(b), float(eps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, y = self._py(logits, target)
        tp = (p * y).sum(1)
        fp = (p * (1 - y)).sum(1)
        fn = (y * (1 - p)).sum(1)
        return (-torch.log((tp + self.eps) / (tp + self.a * fp + self.b * fn + self.eps))).mean()


def study_lovasz_grad(gt_sorted: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Increments of ``J_k = -log((I_k + e) / (U_k + e))`` along labels sorted by decreasing error (authors' form)."""
    gts = gt_sorted.sum()
    inter = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jac = -torch.log((inter + eps) / (union + eps))
    if gt_sorted.numel() > 1:
        jac = torch.cat([jac[:1], jac[1:] - jac[:-1]])
    return jac


class StudyLovaszLoss(_Region):
    """Authors' ``lovasz``: sqrt errors on clipped p, ``-log`` IoU increments, mean over both classes."""

    def __init__(self) -> None:
        super().__init__("both")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, y = self._py(logits, target, clip=True)
        if p.shape[1] == 0:
            return _zero(logits)
        losses = []
        for c in range(p.shape[0]):
            errors = torch.sqrt((y[c] - p[c]).abs())
            errors_sorted, perm = torch.sort(errors, descending=True)
            grad = study_lovasz_grad(y[c][perm]).detach()
            losses.append(torch.dot(torch.relu(errors_sorted), grad))
        return torch.stack(losses).mean()


def study_boundary_weights(target: torch.Tensor, scale: float = 0.8) -> torch.Tensor:
    """The authors' boundary weight of each pixel's true class, ``(B, H, W)`` float (see the module docstring).

    Distances run to the nearest *labelled* pixel of the other class and the maxima over labelled pixels, so
    ignored pixels change nothing (they get weight 0 in the loss). Exact Euclidean distance transform
    (``scipy.ndimage.distance_transform_edt``) on the CPU.
    """
    y = (target == 1).detach().to("cpu").numpy()
    valid = (target != IGNORE).detach().to("cpu").numpy()
    out = np.ones(y.shape, dtype=np.float32)
    for b in range(y.shape[0]):
        pos, neg = y[b] & valid[b], ~y[b] & valid[b]
        if not pos.any() or not neg.any():
            continue
        # distances to the nearest *labelled* pixel of the other class (ignored pixels are neither), plus 1
        d1 = ndimage.distance_transform_edt(~neg) + 1.0
        d0 = ndimage.distance_transform_edt(~pos) + 1.0
        w1 = np.where(d1 < 4.5, d1[pos].max(), 1.0)
        out[b] = np.where(pos, w1, np.where(neg, scale * d0[neg].max(), 1.0))
    return torch.from_numpy(out).to(target.device)


class StudyBoundaryLoss(nn.Module):
    """Authors' ``boundary``: ``sum_i W_i (-log pc_{i,t_i}) / (N*K)`` with :func:`study_boundary_weights`."""

    def __init__(self, scale: float = 0.8) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid, n = _labelled(logits, target)
        if n == 0:
            return _zero(logits)
        w = study_boundary_weights(target, self.scale) * valid
        terms = _focal_terms(logits, _clean(target), 0.0)
        return (w * terms).sum() / (n * logits.shape[1])


class StudyCenterLoss(FocalLoss):
    """Authors' ``center`` as trained: ``sum_i (-log pc_{i,t_i}) / (N*K)``, the focal loss with gamma 0
    (cross-entropy halved; its distance maps are computed but never used). The deck's centre weighting is
    ``center_weighted``."""

    def __init__(self) -> None:
        super().__init__(gamma=0.0)


class WeightedSum(nn.Module):
    """``sum_j w_j L_j(logits, target)``."""

    def __init__(self, terms: list[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = [float(w) for w, _ in terms]
        self.terms = nn.ModuleList(m for _, m in terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * m(logits, target) for w, m in zip(self.weights, self.terms, strict=True))  # type: ignore[return-value]


def _focal_iou(mix: float = 0.5, gamma: float = 2.0) -> nn.Module:
    return WeightedSum([(mix, FocalLoss(gamma)), (1.0 - mix, SoftIoULoss())])


def _ce_iou(mix: float = 0.5) -> nn.Module:
    return WeightedSum([(mix, CrossEntropyLoss()), (1.0 - mix, SoftIoULoss())])


def _focal_iou_center(mix: float = 0.5, center_weight: float = 0.5, gamma: float = 2.0, lam: float = 4.0) -> nn.Module:
    return WeightedSum([(mix, FocalLoss(gamma)), (1.0 - mix, SoftIoULoss()), (center_weight, CenterWeightedLoss(lam))])


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "ce": CrossEntropyLoss,
    "focal": FocalLoss,
    "iou": SoftIoULoss,
    "dice": DiceLoss,
    "log_cosh": StudyLogCoshLoss,
    "tversky": StudyTverskyLoss,
    "lovasz": StudyLovaszLoss,
    "boundary": StudyBoundaryLoss,
    "center": StudyCenterLoss,
    "log_cosh_dice": LogCoshDiceLoss,
    "tversky_landslide": TverskyLoss,
    "lovasz_softmax": LovaszSoftmaxLoss,
    "boundary_weighted": BoundaryWeightedLoss,
    "center_weighted": CenterWeightedLoss,
    "focal_iou": _focal_iou,
    "ce_iou": _ce_iou,
    "focal_iou_center": _focal_iou_center,
}
DEFAULT_LOSS = "focal_iou"
#: The losses that mix terms with a weight ``mix``; only these take it (``create_loss(name, mix=...)``).
MIXTURE_LOSSES: tuple[str, ...] = ("focal_iou", "ce_iou", "focal_iou_center")
#: The deck's loss names, each computing the authors' formula (module docstring).
STUDY_LOSSES: tuple[str, ...] = (
    "ce",
    "focal",
    "iou",
    "focal_iou",
    "log_cosh",
    "tversky",
    "lovasz",
    "boundary",
    "center",
)
#: The literature's versions (and the project's own losses) under names of their own.
LITERATURE_LOSSES: tuple[str, ...] = tuple(n for n in LOSSES if n not in STUDY_LOSSES)


def unknown_loss_message(name: str) -> str:
    """One line naming a bad loss name and every accepted one, study names and literature names apart."""
    return (
        f"loss {name!r}: expected a study name ({', '.join(STUDY_LOSSES)}) "
        f"or a literature name ({', '.join(LITERATURE_LOSSES)})"
    )


def list_losses() -> list[str]:
    """Names accepted by :func:`create_loss`."""
    return list(LOSSES)


def create_loss(name: str = DEFAULT_LOSS, **params: Any) -> nn.Module:
    """Loss module by name with its parameters; ValueError naming the bad name/parameter."""
    if name not in LOSSES:
        raise UserError(unknown_loss_message(name))
    if "mix" in params and name not in MIXTURE_LOSSES:
        raise UserError(f"loss {name!r} is not a mixture: mix applies to {', '.join(MIXTURE_LOSSES)}")
    try:
        return LOSSES[name](**params)
    except TypeError as exc:
        raise UserError(f"loss {name!r}: bad parameter(s) {sorted(params)} ({exc})") from None


def resize_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a (B, H, W) target: 2x up copies each pixel into 2x2, 2x down keeps
    every second pixel (OpenCV INTER_NEAREST), other sizes use ``F.interpolate(mode="nearest")``."""
    h, w = target.shape[-2:]
    if (h, w) == tuple(size):
        return target
    if size == (2 * h, 2 * w):
        return target.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    if size == (-(-h // 2), -(-w // 2)):
        return target[..., ::2, ::2]
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].to(target.dtype)


class OutLoss(nn.Module):
    """Apply a pixel loss to ``outputs["out"]`` of a model output dict."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return self.base(outputs["out"], target)


class MultiResLoss(nn.Module):
    """``w256 L(out_256, up(y)) + w128 L(out, y) + w64 L(out_64, down(y))`` (default 0.25/0.5/0.25).

    Falls back to ``L(out, y)`` when the dict has no ``out_256``/``out_64`` (mono/dual heads).
    """

    def __init__(self, base: nn.Module, weights: tuple[float, float, float] = (0.25, 0.5, 0.25)) -> None:
        super().__init__()
        if len(weights) != 3:
            raise ValueError(f"multires weights {weights!r}: expected 3 values (256, 128, 64)")
        self.base, self.weights = base, tuple(float(w) for w in weights)

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if "out_256" not in outputs or "out_64" not in outputs:
            return self.base(outputs["out"], target)
        total = self.weights[1] * self.base(outputs["out"], target)
        for w, key in ((self.weights[0], "out_256"), (self.weights[2], "out_64")):
            total = total + w * self.base(outputs[key], resize_target(target, tuple(outputs[key].shape[-2:])))
        return total


class DualLoss(nn.Module):
    """``seg_loss(outputs, y) + bce_weight * BCE(patch_logit, any(y == 1))``."""

    def __init__(self, seg_loss: nn.Module, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.seg_loss, self.bce_weight = seg_loss, float(bce_weight)

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        loss = self.seg_loss(outputs, target)
        if "patch_logit" in outputs:
            label = (target == 1).flatten(1).any(dim=1).float()
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(outputs["patch_logit"].float(), label)
        return loss


def build_criterion(
    loss_name: str = DEFAULT_LOSS,
    head: str = "multires",
    multires_weights: tuple[float, float, float] = (0.25, 0.5, 0.25),
    bce_weight: float = 1.0,
    **params: Any,
) -> nn.Module:
    """Criterion ``(outputs dict, target (B, H, W)) -> scalar`` for a head: MultiResLoss for
    ``multires``, OutLoss for ``mono``, DualLoss(OutLoss) for ``dual``."""
    base = create_loss(loss_name, **params)
    if head == "multires":
        return MultiResLoss(base, multires_weights)
    if head == "mono":
        return OutLoss(base)
    if head == "dual":
        return DualLoss(OutLoss(base), bce_weight)
    raise ValueError(f"head={head!r}: expected one of multires, mono, dual")
