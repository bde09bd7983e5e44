"""Imagery region features: what a segmenter's landslide probability map says about one region.

Input is the landslide-class probability map of each region's patch, ``prob`` of shape ``(N, H, W)``
(float, values in [0, 1]) and the segmenter's stored pixel threshold. Optionally a patch-level
probability ``patch_prob`` ``(N,)`` (the dual head's sigmoid, or the segmenter's documented rule);
when it is absent the maximum pixel probability is used as the patch probability.

Features (one row per region, column prefix ``img_``):

=====================  ==========================================================================
column                 meaning (unit)
=====================  ==========================================================================
``img_patch_prob``     patch-level landslide probability, [0, 1]
``img_max_prob``       maximum pixel probability, [0, 1]
``img_mean_prob``      mean pixel probability, [0, 1]
``img_area_frac``      fraction of pixels with ``prob >= threshold``, [0, 1]
``img_largest_cc_px``  pixels in the largest 8-connected landslide component (pixels)
``img_largest_cc_m2``  the same area in square metres (``pixel_size_m`` squared per pixel; 10 m for S2)
``img_n_components``   number of 8-connected landslide components (count)
=====================  ==========================================================================

Connected components use OpenCV's ``connectedComponentsWithStats`` (8-connectivity), a single pass
per patch; everything else is vectorised over the batch.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

IMAGERY_FEATURES: tuple[str, ...] = (
    "img_patch_prob",
    "img_max_prob",
    "img_mean_prob",
    "img_area_frac",
    "img_largest_cc_px",
    "img_largest_cc_m2",
    "img_n_components",
)
DEFAULT_PIXEL_SIZE_M = 10.0


def binary_masks(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Landslide masks ``(N, H, W)`` uint8 0/1: ``prob >= threshold``."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return (np.asarray(prob) >= threshold).astype(np.uint8)


def component_stats(mask: np.ndarray) -> tuple[int, int]:
    """(number of 8-connected components, pixels in the largest one) of one ``(H, W)`` 0/1 mask."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return 0, 0
    n_labels, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the background
    return int(n_labels - 1), int(areas.max())


def imagery_region_features(
    prob: np.ndarray,
    threshold: float,
    patch_prob: np.ndarray | None = None,
    pixel_size_m: float = DEFAULT_PIXEL_SIZE_M,
    masks: np.ndarray | None = None,
) -> pd.DataFrame:
    """Region features from probability maps ``prob`` ``(N, H, W)``; see the module docstring.

    ``masks`` ``(N, H, W)`` 0/1 may be passed when the caller already thresholded (e.g. the
    segmenter's post-processed mask); otherwise ``prob >= threshold`` is used. Returns a
    DataFrame with the :data:`IMAGERY_FEATURES` columns and a ``RangeIndex`` of length N.
    """
    p = np.asarray(prob, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"prob must have shape (N, H, W), got {p.shape}")
    n = p.shape[0]
    if n and (np.isnan(p).any() or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("prob must hold probabilities in [0, 1] without NaN")
    m = binary_masks(p, threshold) if masks is None else np.asarray(masks, dtype=np.uint8)
    if m.shape != p.shape:
        raise ValueError(f"masks shape {m.shape} does not match prob shape {p.shape}")
    flat = p.reshape(n, -1)
    max_prob = flat.max(axis=1) if n else np.zeros(0, np.float32)
    mean_prob = flat.mean(axis=1) if n else np.zeros(0, np.float32)
    area_frac = m.reshape(n, -1).mean(axis=1) if n else np.zeros(0)
    if patch_prob is None:
        pp = max_prob.astype(np.float64)
    else:
        pp = np.asarray(patch_prob, dtype=np.float64).reshape(-1)
        if pp.shape[0] != n:
            raise ValueError(f"patch_prob has {pp.shape[0]} values, expected {n}")
    n_comp = np.zeros(n, dtype=np.int64)
    largest = np.zeros(n, dtype=np.int64)
    for i in np.flatnonzero(area_frac > 0):
        n_comp[i], largest[i] = component_stats(m[i])
    return pd.DataFrame(
        {
            "img_patch_prob": pp,
            "img_max_prob": max_prob.astype(np.float64),
            "img_mean_prob": mean_prob.astype(np.float64),
            "img_area_frac": area_frac.astype(np.float64),
            "img_largest_cc_px": largest,
            "img_largest_cc_m2": largest.astype(np.float64) * float(pixel_size_m) ** 2,
            "img_n_components": n_comp,
        }
    )


def masked_region_features(
    prob: np.ndarray, valid: np.ndarray, threshold: float, pixel_area_m2: float, pool: int = 3
) -> dict[str, float]:
    """The :data:`IMAGERY_FEATURES` of one region cut from a scene's probability map.

    ``prob`` ``(H, W)`` landslide probability (NaN where unknown), ``valid`` ``(H, W)`` bool: the pixels
    inside the region with a known probability (not cloud, not nodata). The patch probability follows the
    segmenter's documented rule on the valid pixels: the maximum of the ``pool x pool`` mean (averaged
    over valid neighbours only). ``pixel_area_m2``: true area of one pixel. Raises ``ValueError`` when no
    pixel is valid.
    """
    v = np.asarray(valid, dtype=bool)
    if not v.any():
        raise ValueError("no valid pixel in the region")
    p = np.where(v, np.nan_to_num(np.asarray(prob, dtype=np.float32), nan=0.0), 0.0).astype(np.float32)
    w = v.astype(np.float32)
    k = (pool, pool)
    num = cv2.boxFilter(p, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    den = cv2.boxFilter(w, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    pooled = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    mask = (p >= threshold) & v
    n_comp, largest = component_stats(mask.astype(np.uint8))
    return {
        "img_patch_prob": float(pooled[v].max()),
        "img_max_prob": float(p[v].max()),
        "img_mean_prob": float(p[v].mean()),
        "img_area_frac": float(mask[v].mean()),
        "img_largest_cc_px": int(largest),
        "img_largest_cc_m2": float(largest) * float(pixel_area_m2),
        "img_n_components": int(n_comp),
    }
