"""Spectral indices and their changes, on float32 reflectance arrays of any (matching) shape; NaN stays NaN.

* NDVI ``(NIR - red) / (NIR + red)`` with Sentinel-2 B8 and B4.
* Bare-soil index (BSI, Rikimaru et al. 2002) ``((SWIR1 + red) - (NIR + blue)) / ((SWIR1 + red) + (NIR + blue))``
  with B11, B4, B8, B2: it rises when vegetation gives way to bare soil or rock, the brightening a fresh
  landslide scar shows; its change ``BSI_post - BSI_pre`` is the bare-soil/brightness change index.
* dNDVI ``NDVI_post - NDVI_pre`` (negative = vegetation loss).
* Relative dNDVI as HazMapper defines it (Scheip & Wegmann 2021):
  ``rdNDVI = 100 * (NDVI_post - NDVI_pre) / sqrt(NDVI_pre + NDVI_post)``; it scales the loss by the vegetation
  there was, so a loss on dense forest stands out less than the same loss on sparse cover. Where
  ``NDVI_pre + NDVI_post <= 0`` (water, snow, bare both times) it is undefined: NaN, as HazMapper masks it.
  Checked on 2026-12-06 against what this project can read of the paper (NHESS 21, 1495-1511, 2021,
  doi:10.5194/nhess-21-1495-2021): its abstract names the metric ("the relative difference in the normalized
  difference vegetation index (rdNDVI)"), but the stored copies stop before its equation, so the formula above (the
  one HazMapper's documentation gives, as we know it) is **not verified against the paper's text**. It is reported
  (``change.tif`` band 2, ``mean_rdndvi``) and not used by the detector, which thresholds dNDVI. The synthetic event
  world's meadow (sparse before, green after: seasonal greening on a slope) has rdNDVI > 0 and is not detected
  (``tests/change/test_map_event.py``).
"""

from __future__ import annotations

import numpy as np


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / (a + b)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32, copy=False)


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """NDVI from red (B4) and near-infrared (B8) reflectance; NaN where undefined."""
    return _nd(nir, red)


def bsi(blue: np.ndarray, red: np.ndarray, nir: np.ndarray, swir1: np.ndarray) -> np.ndarray:
    """Bare-soil index from B2, B4, B8, B11 reflectance (-1..1, higher = barer)."""
    return _nd(np.asarray(swir1, np.float32) + red, np.asarray(nir, np.float32) + blue)


def dndvi(ndvi_pre: np.ndarray, ndvi_post: np.ndarray) -> np.ndarray:
    """``NDVI_post - NDVI_pre``: negative values are vegetation loss."""
    return (np.asarray(ndvi_post, np.float32) - np.asarray(ndvi_pre, np.float32)).astype(np.float32)


def rdndvi(ndvi_pre: np.ndarray, ndvi_post: np.ndarray) -> np.ndarray:
    """HazMapper's relative dNDVI, percent: ``100 (post - pre) / sqrt(pre + post)``; NaN where ``pre + post <= 0``."""
    pre = np.asarray(ndvi_pre, np.float32)
    post = np.asarray(ndvi_post, np.float32)
    total = pre + post
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, 100.0 * (post - pre) / np.sqrt(np.where(total > 0, total, 1.0)), np.nan)
    return out.astype(np.float32)
