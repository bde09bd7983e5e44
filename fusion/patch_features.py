"""Patch-derived tabular features: a region table built from each region's 14-band patch.

This lets the tabular model run on regions that have a Sentinel-2/L4S patch but no sensor table
(for example the Landslide4Sense patches). Input ``images`` is ``(N, 14, H, W)`` float, channel
first, band order ``B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, slope, DEM`` (the L4S order).
L4S ships pre-scaled values (S2 bands around 1.0; slope and DEM are not degrees/metres), so the
features below are in the patch's own units unless stated otherwise; spectral indices are
unitless ratios in [-1, 1].

Features (``PATCH_FEATURES``; non-finite pixels are ignored):

* slope: ``slope_mean``, ``slope_p90``, ``slope_max``, ``slope_std``
* DEM: ``dem_mean``, ``dem_std``, ``relief`` (DEM 98th minus 2nd percentile), ``dem_grad_mean``
  (mean DEM gradient magnitude per pixel)
* NDVI = (B8-B4)/(B8+B4): ``ndvi_mean``, ``ndvi_p10``, ``ndvi_std``, ``bare_frac`` (fraction of pixels
  with NDVI < 0.1: bare soil or rock anywhere in the patch, not only in a scar)
* NBR = (B8-B12)/(B8+B12): ``nbr_mean``, ``nbr_p10``
* NDWI = (B3-B8)/(B3+B8): ``ndwi_mean``
* ``brightness_mean`` (mean of B2, B3, B4), ``cirrus_mean`` (B10, a cloud proxy)

Leakage: none of these reads the mask. Features that WOULD leak the answer, and are therefore never
computed or used (``LEAKING_FEATURES``): anything computed from the mask (landslide pixel count or
fraction, statistics inside or outside the mask, mask-weighted indices, mask component counts),
the label itself, the patch id or file name, and coordinates (which encode the sampling design).
:func:`patch_tabular_features` takes only the images, so it cannot read a mask.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

N_BANDS = 14
B2, B3, B4, B8, B10, B12, SLOPE, DEM = 1, 2, 3, 7, 9, 11, 12, 13

PATCH_FEATURES: tuple[str, ...] = (
    "slope_mean",
    "slope_p90",
    "slope_max",
    "slope_std",
    "dem_mean",
    "dem_std",
    "relief",
    "dem_grad_mean",
    "ndvi_mean",
    "ndvi_p10",
    "ndvi_std",
    "bare_frac",
    "nbr_mean",
    "nbr_p10",
    "ndwi_mean",
    "brightness_mean",
    "cirrus_mean",
)

LEAKING_FEATURES: tuple[str, ...] = (
    "mask_pixels",
    "mask_frac",
    "mask_components",
    "ndvi_in_mask",
    "ndvi_out_mask",
    "slope_in_mask",
    "landslide",
    "region_id",
    "patch_id",
    "file_name",
    "lon",
    "lat",
)

_EPS = 1e-6


def _index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised difference (a-b)/(a+b), NaN where the denominator is ~0."""
    den = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / den
    out[np.abs(den) < _EPS] = np.nan
    return out


def patch_tabular_features(images: np.ndarray) -> pd.DataFrame:
    """Per-patch statistics (see module docstring) of ``images`` ``(N, 14, H, W)`` -> ``(N, len(PATCH_FEATURES))``.

    Raises ValueError for a wrong shape. Pixels that are NaN/Inf are ignored; a patch whose band is
    entirely non-finite yields NaN for that band's features (LightGBM handles NaN).
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != N_BANDS:
        raise ValueError(f"images must have shape (N, 14, H, W) in L4S band order, got {x.shape}")
    n = x.shape[0]
    x = np.where(np.isfinite(x), x, np.nan).reshape(n, N_BANDS, -1)
    dem_img = x[:, DEM].reshape(n, images.shape[2], images.shape[3])
    with np.errstate(invalid="ignore"):
        gy, gx = np.gradient(dem_img, axis=(1, 2)) if min(images.shape[2:]) > 1 else (dem_img * 0, dem_img * 0)
    grad = np.sqrt(gx**2 + gy**2).reshape(n, -1)
    ndvi = _index(x[:, B8], x[:, B4])
    nbr = _index(x[:, B8], x[:, B12])
    ndwi = _index(x[:, B3], x[:, B8])
    slope = x[:, SLOPE]
    dem = x[:, DEM]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN features
        dem_p = np.nanpercentile(dem, [2, 98], axis=1) if n else np.zeros((2, 0))
        feats = {
            "slope_mean": np.nanmean(slope, axis=1),
            "slope_p90": np.nanpercentile(slope, 90, axis=1) if n else np.zeros(0),
            "slope_max": np.nanmax(slope, axis=1) if n else np.zeros(0),
            "slope_std": np.nanstd(slope, axis=1),
            "dem_mean": np.nanmean(dem, axis=1),
            "dem_std": np.nanstd(dem, axis=1),
            "relief": dem_p[1] - dem_p[0],
            "dem_grad_mean": np.nanmean(grad, axis=1),
            "ndvi_mean": np.nanmean(ndvi, axis=1),
            "ndvi_p10": np.nanpercentile(ndvi, 10, axis=1) if n else np.zeros(0),
            "ndvi_std": np.nanstd(ndvi, axis=1),
            "bare_frac": np.nanmean(np.where(np.isnan(ndvi), np.nan, (ndvi < 0.1).astype(np.float32)), axis=1),
            "nbr_mean": np.nanmean(nbr, axis=1),
            "nbr_p10": np.nanpercentile(nbr, 10, axis=1) if n else np.zeros(0),
            "ndwi_mean": np.nanmean(ndwi, axis=1),
            "brightness_mean": np.nanmean(x[:, [B2, B3, B4]].reshape(n, -1), axis=1),
            "cirrus_mean": np.nanmean(x[:, B10], axis=1),
        }
    return pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in feats.items()}, columns=list(PATCH_FEATURES))


def patch_region_table(
    images: np.ndarray,
    region_ids: np.ndarray,
    masks: np.ndarray | None = None,
    label_column: str = "landslide",
) -> pd.DataFrame:
    """A region table from patches: ``region_id``, the :data:`PATCH_FEATURES`, and a label.

    The label (``label_column``: 1 when the patch's mask has any landslide pixel) is added only when
    ``masks`` ``(N, H, W)`` is given; the mask is used for the label and nothing else, so the feature
    columns are identical with or without it.
    """
    ids = np.asarray(region_ids)
    feats = patch_tabular_features(images)
    if ids.shape[0] != len(feats):
        raise ValueError(f"region_ids has {ids.shape[0]} entries, expected {len(feats)} (one per patch)")
    table = pd.concat([pd.DataFrame({"region_id": ids}), feats], axis=1)
    if masks is not None:
        m = np.asarray(masks)
        if m.shape[0] != len(feats):
            raise ValueError(f"masks has {m.shape[0]} entries, expected {len(feats)} (one per patch)")
        table[label_column] = (m.reshape(m.shape[0], -1) > 0).any(axis=1).astype(np.int64)
    return table
