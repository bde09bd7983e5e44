"""The event inventory: one polygon per detected region, with its evidence and the reason in words.

Regions are 8-connected groups of detected pixels (:func:`imagery.change.detector.detect`), polygonized over
the whole area strip by strip (:class:`common.geo.StripPolygonizer`: pixel-edge geometry in the grid's CRS,
geodesic ``area_m2``, regions under ``min_area_m2`` dropped; a region crossing block or tile borders is one
polygon). Per polygon, over its pixels (NaN ignored):

``id``, ``area_m2``, ``confidence`` (mean fused probability), ``max_probability``, ``mean_dndvi``,
``mean_rdndvi``, ``mean_dbsi``, ``mean_slope_deg``, ``mean_ndvi_pre``, ``mean_ndvi_post``, ``clear_obs_pre``
and ``clear_obs_post`` (the fewest clear acquisitions of any of its pixels: the weakest evidence),
``susceptibility`` (mean, when a susceptibility raster was given), ``p_segmenter`` (the segmenter's mean
probability over the pixels it ran on, when ``--imagery-model`` was given; NaN/null where the gate kept it off the
whole polygon), ``pre_dates`` / ``post_dates`` (the
acquisition dates of each window, comma-separated), ``evidence`` (short tags joined by ``+``) and ``reason``
(the cross-check in words), ``centroid_lon`` / ``centroid_lat``.

**Rejected candidates** (:func:`build_rejected`, the ``rejected`` layer, never mixed into the inventory): regions
the cross-checks turned down, polygonized the same way (>= ``min_area_m2``, merged across block borders), one
``kind`` each with its ``reason``:

* ``flat_loss``: vegetation loss (the detector's loss rule met, both windows seen) where the slope rule fails:
  "vegetation loss on flat ground (slope N deg): likely harvest or clearing";
* ``segmenter_only`` (with ``--imagery-model``): the segmenter's probability at or above its threshold where no
  vegetation was lost: "the segmenter sees a scar but nothing changed: older landslide or bare rock".

Columns: ``id`` (1..n by kind, then largest first), ``area_m2``, ``kind``, ``reason``, ``mean_dndvi``,
``mean_slope_deg``, ``p_segmenter`` (when a segmenter ran), ``centroid_lon`` / ``centroid_lat``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from common.geo import Feature, Grid, rasterize
from common.geo.grid import Window

#: Slope above which a polygon is called steep in its reason, degrees.
STEEP_DEG = 25.0
#: BSI increase read as "bare after the event".
BARE_DBSI = 0.05
#: Susceptibility read as high / low in the reason.
HIGH_SUSCEPTIBILITY = 0.5
LOW_SUSCEPTIBILITY = 0.2
#: The kinds of rejected candidates and how they read in a summary line, in their order in the layer.
REJECTED_WORDS: dict[str, str] = {"flat_loss": "vegetation loss on flat ground", "segmenter_only": "segmenter-only"}


def reason(props: Mapping[str, Any], segmenter_threshold: float = 0.5) -> tuple[str, str]:
    """``(evidence, reason)`` of one polygon's properties (module docstring); ``p_segmenter`` at or above
    ``segmenter_threshold`` (the model's own) reads "segmenter sees a scar", below it "segmenter sees none"."""
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
    p_seg = props.get("p_segmenter")
    if p_seg is not None and np.isfinite(p_seg):
        if p_seg >= segmenter_threshold:
            tags.append("segmenter_scar")
            words.append(f"the segmenter sees a scar too (p {p_seg:.2f})")
        else:
            tags.append("segmenter_none")
            words.append(f"the segmenter sees no scar (p {p_seg:.2f}): check")
    if min(props["clear_obs_pre"], props["clear_obs_post"]) <= 1:
        tags.append("few_views")
        words.append(
            f"few clear views ({props['clear_obs_pre']} before, {props['clear_obs_post']} after): check clouds"
        )
    return "+".join(tags), "; ".join(words)


def _window_of(geom: Any, grid: Grid) -> Window:
    """The pixel window of ``grid`` holding ``geom``'s bounds (pixel-edge geometries: exact)."""
    t = grid.transform
    minx, miny, maxx, maxy = geom.bounds
    c0 = max(0, int(np.floor((minx - t.c) / t.a + 1e-6)))
    c1 = min(grid.width, int(np.ceil((maxx - t.c) / t.a - 1e-6)))
    r0 = max(0, int(np.floor((t.f - maxy) / -t.e + 1e-6)))
    r1 = min(grid.height, int(np.ceil((t.f - miny) / -t.e - 1e-6)))
    return Window(c0, r0, max(1, c1 - c0), max(1, r1 - r0))


def _mean(values: np.ndarray, inside: np.ndarray) -> float:
    v = values[inside]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _min(values: np.ndarray, inside: np.ndarray) -> int:
    v = np.nan_to_num(values[inside], nan=0.0)
    return int(v.min()) if v.size else 0


def build_inventory(
    polygons: Sequence[Feature],
    grid: Grid,
    read: Callable[[Window], Mapping[str, np.ndarray]],
    *,
    pre_dates: Sequence[str],
    post_dates: Sequence[str],
    segmenter_threshold: float = 0.5,
) -> list[Feature]:
    """The inventory from ``polygons`` (:func:`common.geo.polygonize` / :class:`common.geo.StripPolygonizer`
    output on ``grid``) with the module docstring's properties.

    ``read(window)`` returns the ``(h, w)`` layers of a window of ``grid``: ``probability``, ``dndvi``,
    ``rdndvi``, ``dbsi``, ``slope_deg``, ``ndvi_pre``, ``ndvi_post``, ``clear_pre``, ``clear_post`` and
    optionally ``susceptibility`` and ``p_segmenter``; each polygon reads only its own bounding window, so memory
    does not grow with the area. Returns features sorted by confidence, highest first, ids 1..n in that order.
    """
    out: list[Feature] = []
    for feat in polygons:
        win = _window_of(feat.geometry, grid)
        inside = rasterize([feat.geometry], grid.subgrid(win)) > 0
        layers = read(win)
        prob = layers["probability"][inside]
        prob = prob[np.isfinite(prob)]
        props: dict[str, Any] = {
            "id": 0,
            "area_m2": round(float(feat.properties["area_m2"]), 1),
            "confidence": round(float(prob.mean()) if prob.size else float("nan"), 4),
            "max_probability": round(float(prob.max()) if prob.size else float("nan"), 4),
            "mean_dndvi": round(_mean(layers["dndvi"], inside), 4),
            "mean_rdndvi": round(_mean(layers["rdndvi"], inside), 2),
            "mean_dbsi": round(_mean(layers["dbsi"], inside), 4),
            "mean_slope_deg": round(_mean(layers["slope_deg"], inside), 2),
            "mean_ndvi_pre": round(_mean(layers["ndvi_pre"], inside), 4),
            "mean_ndvi_post": round(_mean(layers["ndvi_post"], inside), 4),
            "clear_obs_pre": _min(layers["clear_pre"], inside),
            "clear_obs_post": _min(layers["clear_post"], inside),
        }
        if "susceptibility" in layers:
            props["susceptibility"] = round(_mean(layers["susceptibility"], inside), 4)
        if "p_segmenter" in layers:
            props["p_segmenter"] = round(_mean(layers["p_segmenter"], inside), 4)
        props["evidence"], props["reason"] = reason(props, segmenter_threshold)
        props["pre_dates"] = ",".join(pre_dates)
        props["post_dates"] = ",".join(post_dates)
        props["centroid_lon"] = feat.properties["centroid_lon"]
        props["centroid_lat"] = feat.properties["centroid_lat"]
        out.append(Feature(feat.geometry, props))
    out.sort(key=lambda f: -np.nan_to_num(f.properties["confidence"], nan=-1.0))
    for i, f in enumerate(out, start=1):
        f.properties["id"] = i
    return out


def rejected_reason(kind: str, props: Mapping[str, Any]) -> str:
    """The reason in words of a rejected candidate of ``kind`` (module docstring)."""
    if kind == "flat_loss":
        return f"vegetation loss on flat ground (slope {props['mean_slope_deg']:.0f} deg): likely harvest or clearing"
    if kind == "segmenter_only":
        return "the segmenter sees a scar but nothing changed: older landslide or bare rock"
    raise ValueError(f"unknown rejected kind {kind!r}; expected one of {', '.join(REJECTED_WORDS)}")


def build_rejected(
    polygons: Mapping[str, Sequence[Feature]],
    grid: Grid,
    read: Callable[[Window], Mapping[str, np.ndarray]],
) -> list[Feature]:
    """The rejected candidates (module docstring) from ``{kind: polygons}`` on ``grid``; ``read`` as for
    :func:`build_inventory` (``p_segmenter`` is a column when ``read`` returns it). Each polygon reads only its own
    window. Returns them by kind (:data:`REJECTED_WORDS` order), then largest first, ids 1..n in that order."""
    out: list[Feature] = []
    for kind in sorted(polygons, key=list(REJECTED_WORDS).index):
        feats: list[Feature] = []
        for feat in polygons[kind]:
            win = _window_of(feat.geometry, grid)
            inside = rasterize([feat.geometry], grid.subgrid(win)) > 0
            layers = read(win)
            props: dict[str, Any] = {
                "id": 0,
                "area_m2": round(float(feat.properties["area_m2"]), 1),
                "kind": kind,
                "reason": "",
                "mean_dndvi": round(_mean(layers["dndvi"], inside), 4),
                "mean_slope_deg": round(_mean(layers["slope_deg"], inside), 2),
            }
            if "p_segmenter" in layers:
                props["p_segmenter"] = round(_mean(layers["p_segmenter"], inside), 4)
            props["reason"] = rejected_reason(kind, props)
            props["centroid_lon"] = feat.properties["centroid_lon"]
            props["centroid_lat"] = feat.properties["centroid_lat"]
            feats.append(Feature(feat.geometry, props))
        feats.sort(key=lambda f: -f.properties["area_m2"])
        out.extend(feats)
    for i, f in enumerate(out, start=1):
        f.properties["id"] = i
    return out


def rejected_counts(features: Sequence[Feature]) -> dict[str, int]:
    """``{kind: count}`` of rejected candidates, every kind present (0 when none)."""
    counts = dict.fromkeys(REJECTED_WORDS, 0)
    for f in features:
        counts[f.properties["kind"]] += 1
    return counts


def rejected_line(counts: Mapping[str, int]) -> str:
    """ "12 candidates rejected: 10 vegetation loss on flat ground, 2 segmenter-only" (kinds with none left out)."""
    total = sum(counts.values())
    parts = [f"{n} {REJECTED_WORDS.get(k, k)}" for k, n in counts.items() if n]
    head = f"{total} candidate{'s' if total != 1 else ''} rejected"
    return f"{head}: {', '.join(parts)}" if parts else head
