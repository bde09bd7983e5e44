"""The regions an analyst asks about: a circle around a point, a box, or polygons; always in EPSG:4326.

* :func:`circle`: a geodesic circle of ``radius_m`` metres around (``lat``, ``lon``), built in the
  point's azimuthal equidistant projection (true metres) and brought back to lon/lat.
* :func:`box`: ``W S E N`` in degrees.
* :func:`from_geojson` / :func:`read_regions`: polygons from GeoJSON (EPSG:4326 by the format's rule) or
  from any vector file in any CRS (reprojected); each region's id is its ``id`` / ``region_id`` / ``name``
  property, else its position.
* :func:`check_regions`: every region valid, inside -180..180 / -90..90, and at most ``max_area_km2``
  (true, geodesic area).
* :func:`parse_date`: the date of a request or command, ``YYYY-MM-DD`` and not in the future.

Errors are one-line :class:`common.cli.UserError` s naming the value and what was expected.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from common.cli import UserError
from common.geo import geodesic_area_m2, read_vector, to_lonlat

WGS84 = "EPSG:4326"
ID_KEYS = ("id", "region_id", "name")


@dataclass(frozen=True)
class Region:
    """One region: its ``id`` and its polygon in EPSG:4326 (lon, lat)."""

    id: str
    geometry: BaseGeometry

    @cached_property
    def area_km2(self) -> float:
        return geodesic_area_m2(self.geometry, WGS84) / 1e6


def parse_date(text: str, what: str = "date") -> dt.date:
    """A ``YYYY-MM-DD`` date not in the future (``what`` names it in the error)."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{what} {text!r}: expected YYYY-MM-DD") from None
    if day > dt.date.today():
        raise UserError(f"{what} {text} is in the future; expected a date up to today")
    return day


def check_point(lat: float, lon: float) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise UserError(f"point lat={lat}, lon={lon}: expected -90 <= lat <= 90 and -180 <= lon <= 180")


def circle(lat: float, lon: float, radius_m: float, region_id: str = "point") -> Region:
    """The region within ``radius_m`` metres of (``lat``, ``lon``)."""
    check_point(lat, lon)
    if not radius_m > 0:
        raise UserError(f"radius {radius_m} m: expected a positive radius")
    local = f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m"  # true metres around the point
    return Region(region_id, to_lonlat(shapely.Point(0.0, 0.0).buffer(radius_m, quad_segs=32), local))


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
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
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
    for i, f in enumerate(feats):
        props = f.get("properties") or {}
        rid = str(next((props[k] for k in ID_KEYS if props.get(k) not in (None, "")), i + 1))
        try:
            geom = shape(f.get("geometry") or {})
        except Exception as exc:  # noqa: BLE001 - shapely raises several types for malformed GeoJSON
            raise UserError(f"region {rid}: not a valid GeoJSON geometry ({type(exc).__name__})") from None
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
