"""The training-free landslide detector: vegetation loss, on a slope, where there was vegetation, seen enough.

A fresh landslide strips vegetation and soil from a hillslope: NDVI drops and the ground turns bare. A
harvested field also loses its vegetation but lies flat; a quarry or river bar was bare before; a cloud gap
is no evidence at all. The detector encodes exactly that, per pixel:

* **score** (0..1, ranks pixels; an evidence score, not a calibrated probability)::

      loss  = sigmoid((-dNDVI - min_ndvi_loss) / loss_width)
      slope = floor + (1 - floor) * sigmoid((slope_deg - min_slope_deg) / slope_width_deg)
      veg   = floor + (1 - floor) * sigmoid((NDVI_pre - min_pre_ndvi) / veg_width)
      score = loss * slope * veg          (NaN where either window has fewer than min_clear observations)

  The slope and vegetation terms are soft gates with a ``floor``: a strong loss on gentle ground is damped, not
  erased, so the ranking keeps the loss (on the Sen12Landslides sample this keeps ROC-AUC at 0.82 where hard
  gates fall below dNDVI alone).
* **detection** (the inventory's pixels) is the hard rule: ``-dNDVI >= min_ndvi_loss`` and
  ``slope_deg >= min_slope_deg`` and ``NDVI_pre >= min_pre_ndvi`` and enough clear observations in both
  windows.

Defaults and why (all overridable on the command line):

* ``min_ndvi_loss = 0.10``: medians of several dates leave seasonal and phenology noise of a few hundredths of
  NDVI; a loss of 0.1 is beyond it while a partial scar (vegetation and bare soil mixed in a 10 m pixel) still
  passes. HazMapper users threshold rdNDVI around -10 to -20 %, the same order.
* ``min_slope_deg = 10``: shallow landslides and debris flows start on slopes steeper than about 10-15 degrees;
  10 keeps runout zones while excluding fields and floodplains (harvest, flood deposits).
* ``min_pre_ndvi = 0.20``: above bare soil and rock (NDVI about 0.05-0.2): ground that was already bare
  (quarries, river bars, rock faces) cannot lose vegetation it did not have.
* ``min_clear = 1``: at least one clear acquisition per window; a pixel never seen is nodata.
* ``floor = 0.5``, widths ``loss_width = 0.05``, ``slope_width_deg = 3``, ``veg_width = 0.1``: soft edges
  about one noise level wide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectorParams:
    """Thresholds of the detector (module docstring: meaning, units and the reason for each default)."""

    min_ndvi_loss: float = 0.10
    min_slope_deg: float = 10.0
    min_pre_ndvi: float = 0.20
    min_clear: int = 1
    floor: float = 0.5
    loss_width: float = 0.05
    slope_width_deg: float = 3.0
    veg_width: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"floor must be in 0..1, got {self.floor}")
        if min(self.loss_width, self.slope_width_deg, self.veg_width) <= 0:
            raise ValueError("the soft-gate widths must be > 0")
        if self.min_clear < 1:
            raise ValueError(f"min_clear must be >= 1, got {self.min_clear}")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def observed(clear_pre: np.ndarray, clear_post: np.ndarray, params: DetectorParams) -> np.ndarray:
    """Pixels with at least ``min_clear`` clear acquisitions in both windows."""
    return (np.nan_to_num(clear_pre) >= params.min_clear) & (np.nan_to_num(clear_post) >= params.min_clear)


def change_score(
    dndvi: np.ndarray,
    slope_deg: np.ndarray,
    ndvi_pre: np.ndarray,
    clear_pre: np.ndarray,
    clear_post: np.ndarray,
    params: DetectorParams | None = None,
) -> np.ndarray:
    """The detector's per-pixel score, float32 0..1, NaN where unobserved (module docstring). All ``(h, w)``."""
    p = params or DetectorParams()
    loss = _sigmoid((-np.asarray(dndvi, np.float32) - p.min_ndvi_loss) / p.loss_width)
    slope = p.floor + (1 - p.floor) * _sigmoid(
        (np.asarray(slope_deg, np.float32) - p.min_slope_deg) / p.slope_width_deg
    )
    veg = p.floor + (1 - p.floor) * _sigmoid((np.asarray(ndvi_pre, np.float32) - p.min_pre_ndvi) / p.veg_width)
    score = (loss * slope * veg).astype(np.float32)
    ok = observed(clear_pre, clear_post, p) & np.isfinite(score)
    score[~ok] = np.nan
    return score


def detect(
    dndvi: np.ndarray,
    slope_deg: np.ndarray,
    ndvi_pre: np.ndarray,
    clear_pre: np.ndarray,
    clear_post: np.ndarray,
    params: DetectorParams | None = None,
) -> np.ndarray:
    """The hard detection rule (module docstring): ``(h, w)`` bool."""
    p = params or DetectorParams()
    with np.errstate(invalid="ignore"):
        hit = (-np.asarray(dndvi) >= p.min_ndvi_loss) & (np.asarray(slope_deg) >= p.min_slope_deg)
        hit &= np.asarray(ndvi_pre) >= p.min_pre_ndvi
    return hit & observed(clear_pre, clear_post, p)
