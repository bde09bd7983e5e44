"""The event inventory: one polygon per detected region, with its evidence and the reason in words.

Regions are 8-connected groups of detected pixels (:func:`imagery.change.detector.detect`), polygonized with
:func:`common.geo.polygonize` (pixel-edge geometry in the grid's CRS, geodesic ``area_m2``; regions under
``min_area_m2`` dropped). Per polygon, over its pixels (NaN ignored):

``id``, ``area_m2``, ``confidence`` (mean fused probability), ``max_probability``, ``mean_dndvi``,
``mean_rdndvi``, ``mean_dbsi``, ``mean_slope_deg``, ``mean_ndvi_pre``, ``mean_ndvi_post``, ``clear_obs_pre``
and ``clear_obs_post`` (the fewest clear acquisitions of any of its pixels: the weakest evidence),
``susceptibility`` (mean, when a susceptibility raster was given), ``pre_dates`` / ``post_dates`` (the
acquisition dates of each window, comma-separated), ``evidence`` (short tags joined by ``+``) and ``reason``
(the cross-check in words), ``centroid_lon`` / ``centroid_lat``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from common.geo import Feature, Grid, polygonize

#: Slope above which a polygon is called steep in its reason, degrees.
STEEP_DEG = 25.0
#: BSI increase read as "bare after the event".
BARE_DBSI = 0.05
#: Susceptibility read as high / low in the reason.
HIGH_SUSCEPTIBILITY = 0.5
LOW_SUSCEPTIBILITY = 0.2


def _means(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    flat, v = labels.ravel(), np.asarray(values, dtype=np.float64).ravel()
    ok = (flat > 0) & np.isfinite(v)
    sums = np.bincount(flat[ok], weights=v[ok], minlength=n + 1)
    counts = np.bincount(flat[ok], minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _extreme(values: np.ndarray, labels: np.ndarray, n: int, fn: Any, start: float) -> np.ndarray:
    flat, v = labels.ravel(), np.asarray(values, dtype=np.float64).ravel()
    ok = (flat > 0) & np.isfinite(v)
    out = np.full(n + 1, start)
    fn.at(out, flat[ok], v[ok])
    return np.where(np.isfinite(out), out, np.nan)


def reason(props: Mapping[str, Any]) -> tuple[str, str]:
    """``(evidence, reason)`` of one polygon's properties (module docstring)."""
    tags: list[str] = ["vegetation_loss"]
    words = [
        f"vegetation loss (dNDVI {props['mean_dndvi']:+.2f}, NDVI {props['mean_ndvi_pre']:.2f} -> "
        f"{props['mean_ndvi_post']:.2f})"
    ]
    if np.isfinite(props.get("mean_dbsi", np.nan)) and props["mean_dbsi"] >= BARE_DBSI:
        tags.append("bare_after")
        words.append(f"bare after the event (BSI {props['mean_dbsi']:+.2f})")
    slope = props["mean_slope_deg"]
    if slope >= STEEP_DEG:
        tags.append("steep")
        words.append(f"on a steep slope ({slope:.0f} deg)")
    else:
        tags.append("slope")
        words.append(f"on a {slope:.0f} deg slope")
    sus = props.get("susceptibility")
    if sus is not None and np.isfinite(sus):
        if sus >= HIGH_SUSCEPTIBILITY:
            tags.append("susceptible")
            words.append(f"susceptible ground ({sus:.2f})")
        elif sus < LOW_SUSCEPTIBILITY:
            tags.append("low_susceptibility")
            words.append(f"yet low susceptibility ({sus:.2f}): check")
    if min(props["clear_obs_pre"], props["clear_obs_post"]) <= 1:
        tags.append("few_views")
        words.append(
            f"few clear views ({props['clear_obs_pre']} before, {props['clear_obs_post']} after): check clouds"
        )
    return "+".join(tags), "; ".join(words)


def build_inventory(
    detected: np.ndarray,
    grid: Grid,
    layers: Mapping[str, np.ndarray],
    *,
    pre_dates: Sequence[str],
    post_dates: Sequence[str],
    min_area_m2: float = 0.0,
) -> list[Feature]:
    """Polygons of ``detected`` (``(h, w)`` bool on ``grid``) with the module docstring's properties.

    ``layers``: ``(h, w)`` arrays named ``probability``, ``dndvi``, ``rdndvi``, ``dbsi``, ``slope_deg``,
    ``ndvi_pre``, ``ndvi_post``, ``clear_pre``, ``clear_post`` and optionally ``susceptibility``.
    Returns features sorted by confidence, highest first, ids 1..n in that order.
    """
    labels, n = ndimage.label(np.asarray(detected, bool), structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    # polygonize labels regions in the same raster-scan order; the mean of the label array is each region's label
    feats = polygonize(labels > 0, grid, values=labels.astype(np.float64), min_area_m2=min_area_m2)
    means = {k: _means(layers[k], labels, n) for k in layers if k not in ("clear_pre", "clear_post")}
    maxima = _extreme(layers["probability"], labels, n, np.maximum, -np.inf)
    minima = {k: _extreme(layers[k], labels, n, np.minimum, np.inf) for k in ("clear_pre", "clear_post")}
    out: list[Feature] = []
    for feat in feats:
        lab = int(round(feat.properties["mean_prob"]))
        props: dict[str, Any] = {
            "id": 0,
            "area_m2": round(float(feat.properties["area_m2"]), 1),
            "confidence": round(float(means["probability"][lab]), 4),
            "max_probability": round(float(maxima[lab]), 4),
            "mean_dndvi": round(float(means["dndvi"][lab]), 4),
            "mean_rdndvi": round(float(means["rdndvi"][lab]), 2),
            "mean_dbsi": round(float(means["dbsi"][lab]), 4),
            "mean_slope_deg": round(float(means["slope_deg"][lab]), 2),
            "mean_ndvi_pre": round(float(means["ndvi_pre"][lab]), 4),
            "mean_ndvi_post": round(float(means["ndvi_post"][lab]), 4),
            "clear_obs_pre": int(np.nan_to_num(minima["clear_pre"][lab])),
            "clear_obs_post": int(np.nan_to_num(minima["clear_post"][lab])),
        }
        if "susceptibility" in means:
            props["susceptibility"] = round(float(means["susceptibility"][lab]), 4)
        props["evidence"], props["reason"] = reason(props)
        props["pre_dates"] = ",".join(pre_dates)
        props["post_dates"] = ",".join(post_dates)
        props["centroid_lon"] = feat.properties["centroid_lon"]
        props["centroid_lat"] = feat.properties["centroid_lat"]
        out.append(Feature(feat.geometry, props))
    out.sort(key=lambda f: -np.nan_to_num(f.properties["confidence"], nan=-1.0))
    for i, f in enumerate(out, start=1):
        f.properties["id"] = i
    return out
