"""Validate a detected landslide inventory against a reference inventory (no torch; geometry through ``common.geo``).

**Where it counts.** Both inventories (any CRS each) are transformed to one metric CRS: the UTM zone (UPS near
the poles) of the centre of the reference features. Only the area both cover counts: the ``aoi`` polygons when
given, else the reference's coverage (the bounding box of its features) intersected with the detector's
coverage, which is the footprint of the probability ``grid`` when one is given (a detector scans its whole
scene). Without ``grid`` or ``aoi`` the detector's coverage is unknown (a few detections say nothing about where
it looked, and their bounding box would hide every miss outside it), so the reference's coverage is used whole;
pass ``--aoi`` or ``--grid`` when the detector saw less. A polygon counts when its representative point (a point
always inside it) lies in that area; polygons are never clipped, so their sizes stay true. No overlap between
the two, or no reference polygon in the area, is a one-line ``UserError``.

**Object-level matching.** A detected polygon ``d`` and a reference polygon ``r`` *can match* when
``IoU(d, r) >= match_iou`` **or** ``d`` contains the centroid of ``r`` **or** ``r`` contains the centroid of ``d``
(the centroid rule keeps a small landslide drawn inside a coarse detection, or the reverse, from counting as
one miss plus one false alarm). Matching is one-to-one and greedy: candidate pairs are taken in decreasing IoU
(ties: lower detected index, then lower reference index) and a pair is kept when neither polygon is matched yet.
Matched detections are true positives, unmatched detections false positives (``status = "false"``), unmatched
reference polygons misses (``status = "missed"``).

Metrics (``ValidationResult.metrics``; areas are geodesic m2 on the WGS84 ellipsoid):

* by count: ``tp``, ``fp``, ``fn``, ``precision = tp / n_detected``, ``recall = tp / n_reference``, ``f1``;
* by area: ``precision_area`` = area of the matched detected polygons / area of all detected polygons,
  ``recall_area`` = area of the matched reference polygons / area of all reference polygons, ``f1_area``;
* overlap: ``overlap_precision`` / ``overlap_recall`` / ``overlap_iou`` of the union of detections against the
  union of the reference (area of the intersection over each union, and over their union);
* recall per reference size class: ``recall_small`` (< 1,000 m2), ``recall_medium`` (1,000 to 10,000 m2),
  ``recall_large`` (> 10,000 m2), with ``n_small`` ... (NaN where a class is empty);
* pixel level on a ``grid`` (a probability or 0/1 raster): predicted = value >= ``threshold``, reference = the
  reference polygons rasterized on the grid (pixel centres inside); over valid pixels inside the counted area:
  ``pixel_tp`` / ``pixel_fp`` / ``pixel_fn``, ``pixel_precision``, ``pixel_recall``, ``pixel_f1``, ``pixel_iou``
  of the landslide class.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import box

from common.errors import UserError
from common.geo import (
    Feature,
    Grid,
    geodesic_area_m2,
    rasterize,
    read_raster,
    read_vector,
    to_lonlat,
    transform_geometries,
    utm_crs,
)

#: Reference size classes (geodesic m2): name -> [low, high).
SIZE_CLASSES: dict[str, tuple[float, float]] = {
    "small": (0.0, 1_000.0),
    "medium": (1_000.0, 10_000.0),
    "large": (10_000.0, math.inf),
}
STATUS_MATCHED, STATUS_MISSED, STATUS_FALSE = "matched", "missed", "false"


@dataclass(frozen=True)
class ValidationResult:
    """Metrics (name -> value, NaN where undefined), the polygons with their ``status`` and their CRS."""

    metrics: dict[str, float]
    features: list[Feature] = field(repr=False)
    crs: str
    metric_crs: str

    def table(self) -> pd.DataFrame:
        """The metrics as a two-column table ``metric, value``."""
        return pd.DataFrame({"metric": list(self.metrics), "value": list(self.metrics.values())})


def size_class(area_m2: float) -> str:
    """``small`` / ``medium`` / ``large`` for a polygon area in m2 (see :data:`SIZE_CLASSES`)."""
    for name, (low, high) in SIZE_CLASSES.items():
        if low <= area_m2 < high:
            return name
    return "large"


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def _f1(p: float, r: float) -> float:
    if math.isnan(p) or math.isnan(r) or p + r == 0:
        return math.nan if (math.isnan(p) or math.isnan(r)) else 0.0
    return 2 * p * r / (p + r)


def _polygons(geoms: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Valid (multi)polygons only: invalid ones repaired with ``make_valid``; others are an error."""
    kinds = shapely.get_type_id(geoms)
    bad = ~np.isin(kinds, (3, 6))
    if bad.any():
        raise UserError(
            f"{what} {path}: {int(bad.sum())} of {len(geoms)} geometries are not polygons "
            f"(first: {shapely.get_type_id(geoms[bad][0])}); expected landslide polygons"
        )
    fixed = shapely.make_valid(geoms)
    return np.asarray([g if shapely.get_type_id(g) in (3, 6) else shapely.union_all(g) for g in fixed], dtype=object)


def match_polygons(
    detected: np.ndarray, reference: np.ndarray, match_iou: float
) -> tuple[dict[int, int], dict[int, float]]:
    """One-to-one greedy matching (module docstring) of two polygon arrays in one metric CRS.

    Returns ``{detected index: reference index}`` and ``{detected index: IoU}`` for the matched pairs.
    """
    tree = shapely.STRtree(reference)
    d_idx, r_idx = tree.query(detected, predicate="intersects") if len(detected) else (np.array([]), np.array([]))
    candidates: list[tuple[float, int, int]] = []
    for di, ri in zip(d_idx.tolist(), r_idx.tolist(), strict=True):
        d, r = detected[di], reference[ri]
        inter = shapely.area(shapely.intersection(d, r))
        union = shapely.area(d) + shapely.area(r) - inter
        iou = inter / union if union > 0 else 0.0
        centroid_rule = bool(shapely.contains(d, shapely.centroid(r)) or shapely.contains(r, shapely.centroid(d)))
        if iou >= match_iou or centroid_rule:
            candidates.append((-iou, di, ri))
    candidates.sort()
    pairs: dict[int, int] = {}
    ious: dict[int, float] = {}
    used: set[int] = set()
    for neg_iou, di, ri in candidates:
        if di in pairs or ri in used:
            continue
        pairs[di] = ri
        ious[di] = -neg_iou
        used.add(ri)
    return pairs, ious


def _coverage(geoms: np.ndarray) -> shapely.Geometry:
    return box(*shapely.total_bounds(geoms))


def _grid_footprint(grid: Grid, crs: str) -> shapely.Geometry:
    b = grid.bounds
    return transform_geometries(shapely.segmentize(box(b.left, b.bottom, b.right, b.top), _seg(grid)), grid.crs, crs)


def _seg(grid: Grid) -> float:
    b = grid.bounds
    return max(b.right - b.left, b.top - b.bottom) / 64.0


def _inside(geoms: np.ndarray, area: shapely.Geometry) -> np.ndarray:
    shapely.prepare(area)
    return np.asarray(shapely.contains(area, shapely.point_on_surface(geoms)), dtype=bool)


def _pixel_metrics(
    grid_path: Path, reference: np.ndarray, area: shapely.Geometry, crs: str, threshold: float
) -> dict[str, float]:
    data = read_raster(grid_path)
    grid = data.grid
    values = data.array.astype(np.float64)
    valid = np.isfinite(values)
    if data.nodata is not None and not (isinstance(data.nodata, float) and math.isnan(data.nodata)):
        valid &= data.array != data.nodata
    in_area = rasterize([area], grid, crs=crs).astype(bool)
    valid &= in_area
    if not valid.any():
        raise UserError(f"--grid {grid_path}: no valid pixel inside the area both inventories cover")
    pred = (values >= threshold) & valid
    ref = rasterize(list(reference), grid, crs=crs).astype(bool) & valid
    tp = int((pred & ref).sum())
    fp = int((pred & ~ref).sum())
    fn = int((~pred & ref).sum())
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "pixel_n": float(valid.sum()),
        "pixel_tp": float(tp),
        "pixel_fp": float(fp),
        "pixel_fn": float(fn),
        "pixel_precision": p,
        "pixel_recall": r,
        "pixel_f1": _f1(p, r),
        "pixel_iou": _ratio(tp, tp + fp + fn),
    }


def validate_inventory(
    detected_path: str | os.PathLike[str],
    reference_path: str | os.PathLike[str],
    *,
    aoi_path: str | os.PathLike[str] | None = None,
    grid_path: str | os.PathLike[str] | None = None,
    match_iou: float = 0.1,
    threshold: float = 0.5,
) -> ValidationResult:
    """Score ``detected_path`` against ``reference_path`` (vector files OGR reads; see the module docstring).

    The returned features carry ``source`` (detected/reference), ``feature_id`` (row in its file), ``status``
    (matched/missed/false), ``match_id``, ``iou``, ``area_m2`` and ``size_class``, in the reference's CRS.
    """
    if not 0.0 < match_iou <= 1.0:
        raise UserError(f"--match-iou {match_iou}: expected a number in (0, 1]")
    det_path, ref_path = Path(detected_path), Path(reference_path)
    det = read_vector(det_path)
    ref = read_vector(ref_path)
    det_geoms = _polygons(det.geometries, det_path, "detected")
    ref_geoms = _polygons(ref.geometries, ref_path, "reference")
    centre = shapely.centroid(shapely.union_all(to_lonlat(shapely.envelope(ref_geoms), ref.crs)))
    mcrs = utm_crs(centre.x, centre.y)
    d = np.asarray(transform_geometries(det_geoms, det.crs, mcrs), dtype=object)
    r = np.asarray(transform_geometries(ref_geoms, ref.crs, mcrs), dtype=object)

    grid = Grid.from_raster(grid_path) if grid_path is not None else None
    if aoi_path is not None:
        aoi = read_vector(aoi_path)
        area = shapely.union_all(
            transform_geometries(_polygons(aoi.geometries, Path(aoi_path), "--aoi"), aoi.crs, mcrs)
        )
        where = f"--aoi {aoi_path}"
    else:
        det_cover = _grid_footprint(grid, mcrs) if grid is not None else _coverage(d)
        area = shapely.intersection(det_cover, _coverage(r))
        if grid is None and not area.is_empty:
            area = _coverage(r)  # the detector's coverage is unknown: every reference polygon counts
        where = "the area both inventories cover"
    if area.is_empty or area.area <= 0:
        raise UserError(
            f"detected {det_path} and reference {ref_path} do not overlap"
            + (f" inside --aoi {aoi_path}" if aoi_path else "")
            + "; expected two inventories of the same area (check their CRS)"
        )
    d_in, r_in = _inside(d, area), _inside(r, area)
    if not r_in.any():
        raise UserError(f"reference {ref_path}: no polygon inside {where}; nothing to validate against")
    d_ids, r_ids = np.flatnonzero(d_in), np.flatnonzero(r_in)
    d_sel, r_sel = d[d_in], r[r_in]
    pairs, ious = match_polygons(d_sel, r_sel, match_iou)
    matched_ref = {ri: di for di, ri in pairs.items()}

    d_area = np.array([geodesic_area_m2(g, mcrs) for g in d_sel])
    r_area = np.array([geodesic_area_m2(g, mcrs) for g in r_sel])
    tp, n_det, n_ref = len(pairs), len(d_sel), len(r_sel)
    m: dict[str, float] = {
        "n_detected": float(n_det),
        "n_reference": float(n_ref),
        "tp": float(tp),
        "fp": float(n_det - tp),
        "fn": float(n_ref - tp),
    }
    m["precision"], m["recall"] = _ratio(tp, n_det), _ratio(tp, n_ref)
    m["f1"] = _f1(m["precision"], m["recall"])
    md = np.array([i in pairs for i in range(n_det)], dtype=bool)
    mr = np.array([i in matched_ref for i in range(n_ref)], dtype=bool)
    m["area_detected_m2"], m["area_reference_m2"] = float(d_area.sum()), float(r_area.sum())
    m["precision_area"] = _ratio(d_area[md].sum(), d_area.sum())
    m["recall_area"] = _ratio(r_area[mr].sum(), r_area.sum())
    m["f1_area"] = _f1(m["precision_area"], m["recall_area"])
    d_union = shapely.union_all(d_sel) if n_det else shapely.Polygon()
    r_union = shapely.union_all(r_sel)
    inter = geodesic_area_m2(shapely.intersection(d_union, r_union), mcrs) if n_det else 0.0
    du, ru = geodesic_area_m2(d_union, mcrs) if n_det else 0.0, geodesic_area_m2(r_union, mcrs)
    m["overlap_precision"], m["overlap_recall"] = _ratio(inter, du), _ratio(inter, ru)
    m["overlap_iou"] = _ratio(inter, du + ru - inter)
    classes = np.array([size_class(a) for a in r_area])
    for name in SIZE_CLASSES:
        sel = classes == name
        m[f"n_{name}"] = float(sel.sum())
        m[f"recall_{name}"] = _ratio(mr[sel].sum(), sel.sum())
    if grid_path is not None:
        m.update(_pixel_metrics(Path(grid_path), r_sel, area, mcrs, threshold))

    out_crs = ref.crs
    features: list[Feature] = []
    d_out = transform_geometries(d_sel, mcrs, out_crs) if n_det else d_sel
    r_out = transform_geometries(r_sel, mcrs, out_crs)
    for i in range(n_det):
        j = pairs.get(i)
        iou = float(ious[i]) if j is not None else None
        match = int(r_ids[j]) if j is not None else None
        status = STATUS_MATCHED if j is not None else STATUS_FALSE
        features.append(_polygon(d_out[i], "detected", int(d_ids[i]), status, match, iou, float(d_area[i])))
    for k in range(n_ref):
        i = matched_ref.get(k)
        iou = float(ious[i]) if i is not None else None
        match = int(d_ids[i]) if i is not None else None
        status = STATUS_MATCHED if i is not None else STATUS_MISSED
        features.append(_polygon(r_out[k], "reference", int(r_ids[k]), status, match, iou, float(r_area[k])))
    return ValidationResult(metrics=m, features=features, crs=out_crs, metric_crs=mcrs)


def _polygon(
    geom: Any, source: str, feature_id: int, status: str, match_id: int | None, iou: float | None, area_m2: float
) -> Feature:
    """One polygon of the validation GeoPackage with its ``status`` and match."""
    props = {"source": source, "feature_id": feature_id, "status": status, "match_id": match_id, "iou": iou}
    return Feature(geom, {**props, "area_m2": area_m2, "size_class": size_class(area_m2)})
