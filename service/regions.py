"""The regions an analyst asks about: a circle around a point, a box, or polygons; always in EPSG:4326.

* :func:`circle`: a geodesic circle of ``radius_m`` metres around (``lat``, ``lon``), built in the
  point's azimuthal equidistant projection (true metres) and brought back to lon/lat.
* :func:`box`: ``W S E N`` in degrees.
* :func:`from_geojson` / :func:`read_regions`: polygons from GeoJSON (EPSG:4326 by the format's rule) or
  from any vector file in any CRS (reprojected); each region's id is its ``id`` / ``region_id`` / ``name``
  property, else its position.
* :func:`check_regions`: every region valid, inside -180..180 / -90..90, and at most ``max_area_km2``
  (true, geodesic area).
* :func:`parse_date`: the date of a request or command, ``YYYY-MM-DD``, not before Sentinel-2
  (``S2_FIRST_DATE``) and not in the future; :func:`check_values`: the one check of an assessment's
  scalar values (date, ``days_before``, ``radius_m``, scene name) used by the API and the command alike.

Antimeridian and poles: a circle is built in true metres and split at 180 degrees; a circle around a pole
becomes the polar cap it covers; a GeoJSON ring with an edge spanning more than 180 degrees of longitude is
read as crossing the antimeridian (RFC 7946 asks for such rings to be cut) and split there. Areas are
geodesic on the split geometry. At most :data:`MAX_VERTICES` vertices per request.

Errors are one-line :class:`common.cli.UserError` s naming the value and what was expected.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from common.errors import UserError
from common.geo import geodesic_area_m2, read_vector, to_lonlat, transform_geometries
from imagery.change.defaults import S2_FIRST_DATE

WGS84 = "EPSG:4326"
ID_KEYS = ("id", "region_id", "name")
#: Radius of a point's circle, metres: at least a 10 m pixel, at most 100 km.
MIN_RADIUS_M, MAX_RADIUS_M = 10.0, 100_000.0
MAX_DAYS_BEFORE = 365
#: Vertices of all regions of one request.
MAX_VERTICES = 20_000
#: Outline length of one region (degrees of lon/lat): three times the whole-world box's (1,080), which a
#: region within the area limit never approaches; the geodesic area densifies the outline every 0.01 degree.
MAX_OUTLINE_DEG = 3_600
#: How the values are called: in an API request, and on the command line.
API_NAMES = {"date": "date", "days_before": "days_before", "radius_m": "point.radius_m", "scene": "scene"}
CLI_NAMES = {"date": "--date", "days_before": "--days-before", "radius_m": "--radius-m", "scene": "--scene"}


@dataclass(frozen=True)
class Region:
    """One region: its ``id`` and its polygon in EPSG:4326 (lon, lat); ``known_area_km2``: its true area when
    known exactly (a circle: a polar cap's polygon is larger than the circle it covers)."""

    id: str
    geometry: BaseGeometry
    known_area_km2: float | None = None

    @cached_property
    def area_km2(self) -> float:
        if self.known_area_km2 is not None:
            return self.known_area_km2
        return geodesic_area_m2(self.geometry, WGS84) / 1e6


def parse_date(text: str, what: str = "date") -> dt.date:
    """A ``YYYY-MM-DD`` date from ``S2_FIRST_DATE`` to today (``what`` names it in the error)."""
    try:
        day = dt.date.fromisoformat(str(text))
    except ValueError:
        raise UserError(f"{what} {text!r}: expected YYYY-MM-DD") from None
    if day > dt.date.today():
        raise UserError(f"{what} {text} is in the future; expected a date up to today")
    if day < S2_FIRST_DATE:
        raise UserError(f"{what} {text}: no Sentinel-2 imagery before {S2_FIRST_DATE}; expected a later date")
    return day


def check_values(
    *,
    date: str,
    days_before: Any,
    radius_m: Any = None,
    scene: str | None = None,
    names: dict[str, str] = API_NAMES,
) -> dt.date:
    """The one check of an assessment's values (API and command): ``date`` (:func:`parse_date`),
    ``days_before`` a whole number 0..365, ``radius_m`` (when given) finite within 10 m..100 km, ``scene``
    (when given) a non-empty name. Errors name the value as ``names`` calls it; returns the date."""
    day = parse_date(date, names["date"])
    if isinstance(days_before, bool) or not isinstance(days_before, int | np.integer):
        raise UserError(f"{names['days_before']} {days_before!r}: expected a whole number of days")
    if not 0 <= int(days_before) <= MAX_DAYS_BEFORE:
        raise UserError(f"{names['days_before']} {days_before}: expected 0 to {MAX_DAYS_BEFORE} days")
    if radius_m is not None:
        r = float(radius_m)
        if not (math.isfinite(r) and MIN_RADIUS_M <= r <= MAX_RADIUS_M):
            raise UserError(
                f"{names['radius_m']} {radius_m}: expected a radius of {MIN_RADIUS_M:g} to {MAX_RADIUS_M:,.0f} m"
            )
    if scene is not None and not str(scene).strip():
        raise UserError(f"{names['scene']}: empty name; expected the name of a scene")
    return day


def check_point(lat: float, lon: float) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise UserError(f"point lat={lat}, lon={lon}: expected -90 <= lat <= 90 and -180 <= lon <= 180")


def circle(lat: float, lon: float, radius_m: float, region_id: str = "point") -> Region:
    """The region within ``radius_m`` metres of (``lat``, ``lon``): split at the antimeridian; around a pole,
    the polar cap it covers."""
    check_point(lat, lon)
    r = float(radius_m)
    if not (math.isfinite(r) and r > 0):
        raise UserError(f"radius {radius_m} m: expected a positive, finite radius")
    local = f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m"  # true metres around the point
    disc = shapely.Point(0.0, 0.0).buffer(r, quad_segs=32)
    equal_area = f"+proj=laea +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m"
    area_km2 = float(transform_geometries(shapely.segmentize(disc, r / 64), local, equal_area).area) / 1e6
    ring = to_lonlat(disc, local)
    for pole in (90.0, -90.0):
        if disc.contains(transform_geometries(shapely.Point(lon, pole), WGS84, local)):
            lats = shapely.get_coordinates(ring)[:, 1]
            edge = float(lats.min()) if pole > 0 else float(lats.max())
            cap = shapely.box(-180.0, min(edge, pole), 180.0, max(edge, pole))
            return Region(region_id, cap, known_area_km2=area_km2)
    coords = shapely.get_coordinates(ring)
    coords[:, 0] = lon + (coords[:, 0] - lon + 180.0) % 360.0 - 180.0  # continuous around the point
    return Region(region_id, split_antimeridian(shapely.Polygon(coords)), known_area_km2=area_km2)


def _unwrap(ring: np.ndarray) -> np.ndarray:
    """Longitudes made continuous: an edge spanning more than 180 (and less than 360) degrees crosses 180."""
    out = ring.copy()
    d = np.diff(ring[:, 0])
    jump = np.where((d > 180.0) & (d < 360.0), -360.0, np.where((d < -180.0) & (d > -360.0), 360.0, 0.0))
    out[1:, 0] += np.cumsum(jump)
    return out


def crosses_antimeridian(geom: BaseGeometry) -> bool:
    """True when an edge of ``geom`` spans more than 180 degrees of longitude (read as crossing 180)."""
    polys = getattr(geom, "geoms", [geom])
    for p in polys:
        for ring in (p.exterior, *p.interiors):
            d = np.abs(np.diff(shapely.get_coordinates(ring)[:, 0]))
            if ((d > 180.0) & (d < 360.0)).any():
                return True
    return False


def split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """A polygon with continuous longitudes (possibly beyond +-180) cut at 180 into parts within -180..180."""
    parts = []
    for shift in (-360.0, 0.0, 360.0):
        piece = shapely.intersection(geom, shapely.box(-180.0 - shift, -90.0, 180.0 - shift, 90.0))
        piece = shapely.transform(piece, lambda xy, s=shift: xy + np.array([s, 0.0]))
        parts += [g for g in getattr(piece, "geoms", [piece]) if g.geom_type == "Polygon" and not g.is_empty]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _unwrapped(geom: BaseGeometry) -> BaseGeometry:
    polys = []
    for p in getattr(geom, "geoms", [geom]):
        shell = _unwrap(shapely.get_coordinates(p.exterior))
        holes = []
        for h in p.interiors:
            hole = _unwrap(shapely.get_coordinates(h))
            hole[:, 0] += 360.0 * round((shell[:, 0].mean() - hole[:, 0].mean()) / 360.0)
            holes.append(hole)
        polys.append(split_antimeridian(shapely.make_valid(shapely.Polygon(shell, holes))))
    return polys[0] if len(polys) == 1 else shapely.union_all(polys)


def box(bbox: Sequence[float], region_id: str = "box") -> Region:
    """The region ``W S E N`` (degrees)."""
    if len(bbox) != 4:
        raise UserError(f"bbox {list(bbox)}: expected four numbers W S E N")
    w, s, e, n = (float(v) for v in bbox)
    if not (-180.0 <= w < e <= 180.0 and -90.0 <= s < n <= 90.0):
        raise UserError(f"bbox {w} {s} {e} {n}: expected W < E within -180..180 and S < N within -90..90")
    return Region(region_id, shapely.box(w, s, e, n))


def _polygonal(geom: BaseGeometry, rid: str) -> BaseGeometry:
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise UserError(f"region {rid}: expected a Polygon or MultiPolygon, got {geom.geom_type}")
    try:
        if crosses_antimeridian(geom):
            geom = _unwrapped(geom)
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
    except shapely.errors.GEOSException:
        raise UserError(f"region {rid}: an invalid polygon that could not be repaired") from None
    if geom.is_empty:
        raise UserError(f"region {rid}: the polygon has no area")
    return geom


def from_geojson(obj: dict[str, Any]) -> list[Region]:
    """Regions from a GeoJSON geometry, Feature or FeatureCollection (lon/lat, EPSG:4326)."""
    if not isinstance(obj, dict) or "type" not in obj:
        raise UserError("region: expected a GeoJSON object with a 'type'")
    kind = obj["type"]
    if kind == "FeatureCollection":
        feats = obj.get("features") or []
    elif kind == "Feature":
        feats = [obj]
    else:
        feats = [{"type": "Feature", "geometry": obj, "properties": {}}]
    if not feats:
        raise UserError("region: the FeatureCollection has no features")
    regions = []
    vertices = 0
    for i, f in enumerate(feats):
        props = f.get("properties") or {}
        rid = str(next((props[k] for k in ID_KEYS if props.get(k) not in (None, "")), i + 1))
        try:
            geom = shape(f.get("geometry") or {})
        except Exception as exc:  # noqa: BLE001 - shapely raises several types for malformed GeoJSON
            raise UserError(f"region {rid}: not a valid GeoJSON geometry ({type(exc).__name__})") from None
        vertices += int(shapely.get_num_coordinates(geom))
        if vertices > MAX_VERTICES:
            raise UserError(f"region: more than {MAX_VERTICES:,} vertices in one request; simplify the polygons")
        regions.append(Region(rid, _polygonal(geom, rid)))
    return regions


def read_regions(path: str | os.PathLike[str]) -> list[Region]:
    """Regions from a vector file in any CRS (GeoJSON, GeoPackage, shapefile), reprojected to EPSG:4326."""
    data = read_vector(path, to_crs=WGS84)
    table = data.table
    key = next((k for k in ID_KEYS if k in table.columns), None)
    ids = [str(v) for v in table[key]] if key else [str(i + 1) for i in range(len(data.geometries))]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: region ids in column {key!r} are not unique")
    return [Region(rid, _polygonal(g, rid)) for rid, g in zip(ids, data.geometries, strict=True)]


def check_regions(regions: Sequence[Region], max_area_km2: float) -> None:
    """Refuse regions outside the globe or larger than ``max_area_km2``."""
    if not regions:
        raise UserError("no region given; expected a point, a box or polygons")
    for r in regions:
        w, s, e, n = r.geometry.bounds
        if not (-180.0 <= w and e <= 180.0 and -90.0 <= s and n <= 90.0):
            raise UserError(f"region {r.id}: bounds {w:.4f} {s:.4f} {e:.4f} {n:.4f} are outside lon/lat ranges")
        outline = float(shapely.length(r.geometry))  # degrees; bounds the work of the geodesic area below
        if r.known_area_km2 is None and outline > MAX_OUTLINE_DEG:
            raise UserError(
                f"region {r.id}: an outline of {outline:,.0f} degrees; expected at most {MAX_OUTLINE_DEG:,}"
            )
        if r.area_km2 > max_area_km2:
            raise UserError(f"region {r.id}: {r.area_km2:,.1f} km2 is larger than the limit of {max_area_km2:,.0f} km2")


def bounds(regions: Sequence[Region]) -> tuple[float, float, float, float]:
    """The lon/lat box around every region."""
    return tuple(shapely.union_all([r.geometry for r in regions]).bounds)  # type: ignore[return-value]


def from_request(request: dict[str, Any]) -> list[Region]:
    """The regions of an assess request (``region`` GeoJSON, ``point`` {lat, lon, radius_m}, or ``bbox``)."""
    given = [k for k in ("region", "point", "bbox") if request.get(k)]
    if len(given) != 1:
        raise UserError(f"give exactly one of region, point or bbox; got {given or 'none'}")
    if request.get("region"):
        return from_geojson(request["region"])
    if request.get("point"):
        p = request["point"]
        return [circle(float(p["lat"]), float(p["lon"]), float(p.get("radius_m", 500.0)))]
    return [box(request["bbox"])]
