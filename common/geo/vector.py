"""Vectors: polygons from masks, true areas, GeoJSON/GeoPackage writing, reading inventories, rasterizing.

* :func:`polygonize` turns a ``(rows, cols)`` mask on a grid into :class:`Feature` s (shapely geometry
  in the grid's CRS plus properties: ``id``, ``area_m2``, ``n_pixels``, optional ``mean_prob`` /
  ``max_prob``, ``centroid_lon`` / ``centroid_lat``).
* Areas are geodesic (:func:`geodesic_area_m2`: WGS84 ellipsoid, pyproj ``Geod``), so they are true
  square metres in any CRS, geographic ones included.
* :func:`write_geojson` writes RFC 7946 GeoJSON (EPSG:4326, lon/lat order, counter-clockwise
  exteriors); :func:`write_gpkg` writes a GeoPackage in the data's own CRS. Both write a temporary
  file beside the target and rename it (``common.atomic.atomic_path``).
* :func:`read_vector` reads GeoPackage / shapefile / GeoJSON (any OGR format) and CSV with lon/lat
  (or x/y plus a ``crs``) columns into shapely geometries plus a pandas attribute table, with an
  optional OGR SQL attribute filter (``where="Year_obs >= 2005"``, the same syntax for every format).
* :class:`StripPolygonizer` does the same as :func:`polygonize` for a mask too large for memory, fed
  strip by strip from top to bottom (memory: one strip plus the regions found so far).
* :func:`rasterize` burns geometries into a uint8 mask on a grid (with a buffer in metres that is
  right in geographic CRSs too); :func:`distance_to` gives each cell's distance in metres to the
  nearest feature.

Coordinates are always handled in (x, y) = (easting, northing) or (lon, lat) order (pyproj
``always_xy=True``), whatever the CRS's official axis order.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyogrio.errors
import pyogrio.raw
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from scipy import ndimage
from shapely.geometry.base import BaseGeometry

from common.atomic import atomic_path
from common.errors import UserError
from common.geo._dataset import PathLike, first_line
from common.geo.grid import Grid, normalize_crs, pixel_size_m
from common.geo.style import write_layer_style

__all__ = [
    "Feature",
    "VectorData",
    "polygonize",
    "StripPolygonizer",
    "geodesic_area_m2",
    "to_lonlat",
    "transform_geometries",
    "write_geojson",
    "write_gpkg",
    "read_vector",
    "rasterize",
    "distance_to",
]

WGS84 = "EPSG:4326"
_GEOD = Geod(ellps="WGS84")
_PYOGRIO_ERRORS = (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError)
_LON_NAMES = ("lon", "longitude", "long", "lng")
_LAT_NAMES = ("lat", "latitude")
_X_NAMES = ("x", "easting")
_Y_NAMES = ("y", "northing")


@dataclass
class Feature:
    """A shapely ``geometry`` (in the CRS of the data it came from) with a ``properties`` dict."""

    geometry: BaseGeometry
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def __geo_interface__(self) -> dict[str, Any]:
        return {"type": "Feature", "geometry": self.geometry.__geo_interface__, "properties": dict(self.properties)}


class VectorData(NamedTuple):
    """What :func:`read_vector` returns: ``geometries`` (object array of shapely geometries),
    ``table`` (attributes, one row per geometry) and ``crs`` (normalised CRS string)."""

    geometries: np.ndarray
    table: pd.DataFrame
    crs: str


# -- coordinate transforms -----------------------------------------------------------------------
def transform_geometries(geometries: Any, src_crs: Any, dst_crs: Any) -> Any:
    """Transform a shapely geometry or an array of them from ``src_crs`` to ``dst_crs`` (always x/y order)."""
    src, dst = normalize_crs(src_crs), normalize_crs(dst_crs)
    if src == dst:
        return geometries
    tr = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geometries, lambda x, y: tr.transform(x, y), interleaved=False)


def to_lonlat(geometries: Any, crs: Any) -> Any:
    """Geometries transformed to EPSG:4326 with (lon, lat) coordinate order."""
    return transform_geometries(geometries, crs, WGS84)


def _densify(geom: BaseGeometry, crs: str) -> BaseGeometry:
    """Add vertices so straight edges in ``crs`` stay close to their shape once transformed to lon/lat."""
    max_len = 0.01 if CRS.from_user_input(crs).is_geographic else 1000.0
    return shapely.segmentize(geom, max_len)


def geodesic_area_m2(geom: BaseGeometry, crs: Any) -> float:
    """True area in m^2 of a (multi)polygon given in ``crs``, on the WGS84 ellipsoid.

    Edges are densified in ``crs`` (every 0.01 degree or 1 km), the geometry is transformed to
    EPSG:4326 and oriented (exterior counter-clockwise, holes clockwise), and
    ``pyproj.Geod(ellps="WGS84").geometry_area_perimeter`` gives the area with holes subtracted.
    Non-polygonal geometries have area 0.
    """
    if geom is None or geom.is_empty or shapely.get_type_id(geom) not in (3, 6):
        if geom is not None and shapely.get_type_id(geom) == 7:  # GeometryCollection
            return float(sum(geodesic_area_m2(g, crs) for g in geom.geoms))
        return 0.0
    src = normalize_crs(crs)
    lonlat = to_lonlat(_densify(geom, src), src)
    w, _, e, _ = lonlat.bounds
    if e - w <= 90.0:
        area, _ = _GEOD.geometry_area_perimeter(shapely.orient_polygons(lonlat))
        return float(abs(area))
    # Wide geometries (up to the whole globe): in strips of 90 degrees of longitude, each a well-defined
    # geodesic polygon (one ring around the globe has no inside), edges along parallels densified.
    total = 0.0
    for k in range(-180, 180, 90):
        part = shapely.intersection(lonlat, shapely.box(k, -90.0, k + 90.0, 90.0))
        if part.is_empty or shapely.get_type_id(part) not in (3, 6, 7):
            continue
        part = shapely.segmentize(part, 0.5)
        polys = [g for g in getattr(part, "geoms", [part]) if shapely.get_type_id(g) in (3, 6)]
        for g in polys:
            area, _ = _GEOD.geometry_area_perimeter(shapely.orient_polygons(g))
            total += abs(area)
    return float(total)


# -- polygonize -----------------------------------------------------------------------------------
def polygonize(
    mask: np.ndarray,
    grid: Grid,
    *,
    values: np.ndarray | None = None,
    min_area_m2: float = 0.0,
    connectivity: int = 8,
) -> list[Feature]:
    """Polygons of the connected regions of a mask, with true areas and optional probability stats.

    * ``mask``: ``(rows, cols)`` on ``grid``, nonzero = object (e.g. a uint8 0/1 landslide mask).
    * ``values``: optional ``(rows, cols)`` float array (e.g. landslide probability); each feature gets
      ``mean_prob`` and ``max_prob`` over its pixels (NaN pixels ignored).
    * ``min_area_m2``: drop features with a smaller geodesic area.
    * ``connectivity``: 8 (diagonal neighbours join a region) or 4.

    Returns one :class:`Feature` per region (raster-scan order of the region's first pixel) with a
    geometry in the grid's CRS made of pixel edges (a valid Polygon with its holes; a MultiPolygon where
    8-connectivity joins pixels touching only at a corner) and
    properties ``id`` (1..n after filtering), ``area_m2`` (:func:`geodesic_area_m2`), ``n_pixels``,
    ``mean_prob``/``max_prob`` (when ``values`` is given) and ``centroid_lon``/``centroid_lat`` (EPSG:4326
    degrees of the planar centroid in the grid's CRS).
    """
    m = np.asarray(mask)
    if m.shape != grid.shape:
        raise ValueError(f"mask shape {m.shape} does not match grid shape {grid.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    vals = None
    if values is not None:
        vals = np.asarray(values, dtype=np.float64)
        if vals.shape != grid.shape:
            raise ValueError(f"values shape {vals.shape} does not match grid shape {grid.shape}")
    fg = m != 0
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    labels, n = ndimage.label(fg, structure=structure)
    if n == 0:
        return []
    parts: dict[int, list[BaseGeometry]] = defaultdict(list)
    for geojson, value in rasterio.features.shapes(
        labels.astype(np.int32), mask=fg, connectivity=connectivity, transform=grid.transform
    ):
        parts[int(value)].append(shapely.geometry.shape(geojson))
    flat = labels.ravel()
    n_pixels = np.bincount(flat, minlength=n + 1)
    if vals is not None:
        sums, counts, maxima = _label_stats(flat, vals.ravel(), n)
    to_ll = Transformer.from_crs(grid.crs, WGS84, always_xy=True)
    features: list[Feature] = []
    for label in range(1, n + 1):
        pieces = parts[label]
        geom = pieces[0] if len(pieces) == 1 else shapely.unary_union(pieces)
        stats = None if vals is None else (float(sums[label]), int(counts[label]), float(maxima[label]))
        feat = _region_feature(geom, grid.crs, to_ll, len(features) + 1, int(n_pixels[label]), stats, min_area_m2)
        if feat is not None:
            features.append(feat)
    return features


def _label_stats(flat: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label ``0..n`` of ``flat``: sum, count and maximum of the finite ``v`` (label 0 = background)."""
    ok = (flat > 0) & np.isfinite(v)
    sums = np.bincount(flat[ok], weights=v[ok], minlength=n + 1)
    counts = np.bincount(flat[ok], minlength=n + 1)
    maxima = np.full(n + 1, -np.inf)
    np.maximum.at(maxima, flat[ok], v[ok])
    return sums, counts, maxima


def _region_feature(
    geom: BaseGeometry,
    crs: Any,
    to_ll: Transformer,
    fid: int,
    n_pixels: int,
    stats: tuple[float, int, float] | None,
    min_area_m2: float,
) -> Feature | None:
    """The :class:`Feature` of one region (``stats``: sum, count, max of its finite values), or None when it is
    smaller than ``min_area_m2``."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    area = geodesic_area_m2(geom, crs)
    if area < min_area_m2:
        return None
    centroid = geom.centroid
    lon, lat = to_ll.transform(centroid.x, centroid.y)
    props: dict[str, Any] = {"id": fid, "area_m2": area, "n_pixels": n_pixels}
    if stats is not None:
        total, count, top = stats
        props["mean_prob"] = float(total / count) if count else math.nan
        props["max_prob"] = float(top) if count else math.nan
    props["centroid_lon"] = float(lon)
    props["centroid_lat"] = float(lat)
    return Feature(geom, props)


class StripPolygonizer:
    """:func:`polygonize` for a mask streamed in horizontal strips, top to bottom, in bounded memory.

    ``p = StripPolygonizer(grid, min_area_m2=500); p.add(mask_rows, row_off, values_rows); ...; p.features()``

    Each :meth:`add` takes the next strip (``(rows, width)`` mask, nonzero = object, and optional values)
    starting at grid row ``row_off``; strips must follow each other without gap or overlap. Regions are
    labelled per strip and joined across strip borders (union-find on the border rows, with the same 4/8
    connectivity); their pieces are vectorised in pixel coordinates (exact integers, so pieces of one region
    union without slivers) and moved to the grid's CRS once at the end. A region that can no longer grow and
    is certainly smaller than ``min_area_m2`` (pixel count x the largest pixel area of the grid) is dropped
    as soon as its strip is done, so memory holds one strip plus the regions kept so far.

    :meth:`features` returns exactly what :func:`polygonize` returns on the whole mask: the same regions,
    properties and order (raster-scan order of each region's first pixel), with geometries equal up to
    floating-point rounding of the vertices.
    """

    def __init__(self, grid: Grid, *, min_area_m2: float = 0.0, connectivity: int = 8) -> None:
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        self.grid = grid
        self.min_area_m2 = float(min_area_m2)
        self.connectivity = connectivity
        self._structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
        dy, dx = pixel_size_m(grid)
        self._max_pixel_area = float(np.max(dy * dx)) * 1.01
        self._next_row = 0
        self._parent: list[int] = [0]
        self._n: list[int] = [0]
        self._sum: list[float] = [0.0]
        self._cnt: list[int] = [0]
        self._max: list[float] = [-math.inf]
        self._first: list[int] = [0]
        self._pieces: list[list[BaseGeometry]] = [[]]
        self._active: set[int] = set()
        self._done: list[int] = []
        self._last_ids = np.zeros(grid.width, dtype=np.int64)
        self._has_values = False

    def _find(self, a: int) -> int:
        parent = self._parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if self._first[rb] < self._first[ra]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._n[ra] += self._n[rb]
        self._sum[ra] += self._sum[rb]
        self._cnt[ra] += self._cnt[rb]
        self._max[ra] = max(self._max[ra], self._max[rb])
        self._pieces[ra].extend(self._pieces[rb])
        self._pieces[rb] = []
        self._active.discard(rb)

    def add(self, mask: np.ndarray, row_off: int, values: np.ndarray | None = None) -> None:
        """Add the strip ``mask`` (``(rows, grid.width)``) starting at row ``row_off`` (right after the last strip)."""
        m = np.asarray(mask)
        if m.ndim != 2 or m.shape[1] != self.grid.width:
            raise ValueError(f"strip shape {m.shape} does not match the grid width {self.grid.width}")
        if int(row_off) != self._next_row or row_off + m.shape[0] > self.grid.height:
            raise ValueError(
                f"strip at row {row_off} of {m.shape[0]} rows: expected the next strip at row {self._next_row}"
            )
        fg = m != 0
        labels, n = ndimage.label(fg, structure=self._structure)
        base = len(self._parent)
        flat = labels.ravel()
        if n:
            counts = np.bincount(flat, minlength=n + 1)
            uniq, first_idx = np.unique(flat, return_index=True)
            first = np.zeros(n + 1, dtype=np.int64)
            first[uniq] = first_idx
            first = first + int(row_off) * self.grid.width
            if values is not None:
                self._has_values = True
                v = np.asarray(values, dtype=np.float64).ravel()
                if v.size != flat.size:
                    raise ValueError(f"values shape {np.shape(values)} does not match the strip {m.shape}")
                sums, cnts, maxima = _label_stats(flat, v, n)
            else:
                sums, cnts, maxima = np.zeros(n + 1), np.zeros(n + 1, dtype=np.int64), np.full(n + 1, -np.inf)
            pieces: dict[int, list[BaseGeometry]] = defaultdict(list)
            shift = Affine.translation(0, int(row_off))
            for geojson, value in rasterio.features.shapes(
                labels.astype(np.int32), mask=fg, connectivity=self.connectivity, transform=shift
            ):
                pieces[int(value)].append(shapely.geometry.shape(geojson))
            for lab in range(1, n + 1):
                self._parent.append(base + lab - 1)
                self._n.append(int(counts[lab]))
                self._sum.append(float(sums[lab]))
                self._cnt.append(int(cnts[lab]))
                self._max.append(float(maxima[lab]))
                self._first.append(int(first[lab]))
                self._pieces.append(pieces[lab])
                self._active.add(base + lab - 1)
        gids = np.where(labels > 0, labels.astype(np.int64) + base - 1, 0)
        if m.shape[0] and self._next_row > 0 and n:
            prev, cur = self._last_ids, gids[0]
            shifts = (-1, 0, 1) if self.connectivity == 8 else (0,)
            for d in shifts:
                if d < 0:
                    a, b = prev[:d], cur[-d:]
                elif d > 0:
                    a, b = prev[d:], cur[:-d]
                else:
                    a, b = prev, cur
                both = (a > 0) & (b > 0)
                for x, y in set(zip(a[both].tolist(), b[both].tolist(), strict=True)):
                    self._union(int(x), int(y))
        if m.shape[0]:
            self._last_ids = gids[-1].copy()
            self._next_row = int(row_off) + m.shape[0]
        open_roots = {self._find(int(g)) for g in np.unique(self._last_ids) if g > 0}
        for root in [r for r in self._active if self._find(r) == r and r not in open_roots]:
            self._active.discard(root)
            if self._n[root] * self._max_pixel_area < self.min_area_m2:
                self._pieces[root] = []  # certainly too small: forget it now
            else:
                self._done.append(root)

    def features(self) -> list[Feature]:
        """The regions as :class:`Feature` s, exactly as :func:`polygonize` would return them."""
        roots = sorted(set(self._done) | {self._find(r) for r in self._active}, key=lambda r: self._first[r])
        to_ll = Transformer.from_crs(self.grid.crs, WGS84, always_xy=True)
        t = self.grid.transform
        out: list[Feature] = []
        for root in roots:
            pieces = self._pieces[root]
            if not pieces:
                continue
            geom = pieces[0] if len(pieces) == 1 else shapely.unary_union(pieces)
            geom = shapely.transform(geom, lambda xy: np.column_stack([t.a * xy[:, 0] + t.c, t.e * xy[:, 1] + t.f]))
            stats = (self._sum[root], self._cnt[root], self._max[root]) if self._has_values else None
            feat = _region_feature(
                geom, self.grid.crs, to_ll, len(out) + 1, int(self._n[root]), stats, self.min_area_m2
            )
            if feat is not None:
                out.append(feat)
        return out


# -- writing --------------------------------------------------------------------------------------
def _field_arrays(features: Sequence[Feature]) -> tuple[list[str], list[np.ndarray]]:
    names: list[str] = []
    for f in features:
        for key in f.properties:
            if key not in names:
                names.append(key)
    arrays: list[np.ndarray] = []
    for key in names:
        col = [f.properties.get(key) for f in features]
        present = [v for v in col if v is not None]
        if present and all(isinstance(v, (bool, np.bool_)) for v in present) and len(present) == len(col):
            arrays.append(np.asarray(col, dtype=bool))
        elif (
            present
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present)
            and len(present) == len(col)
        ):
            arrays.append(np.asarray(col, dtype=np.int64))
        elif present and all(isinstance(v, (int, float, np.integer, np.floating)) for v in present):
            arrays.append(np.asarray([math.nan if v is None else float(v) for v in col], dtype=np.float64))
        else:
            arrays.append(np.asarray([None if v is None else str(v) for v in col], dtype=object))
    return names, arrays


def _geometry_type(geoms: np.ndarray) -> tuple[str, bool]:
    """OGR layer geometry type for ``geoms`` and whether singles must be promoted to multi."""
    types = {shapely.get_type_id(g) for g in geoms if g is not None}
    names = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon"}
    if len(types) == 1 and next(iter(types)) in names:
        return names[next(iter(types))], False
    for single, multi in ((0, 4), (1, 5), (3, 6)):
        if types and types <= {single, multi}:
            return names[multi], True
    return "Unknown", False


def _write_layer(
    tmp: Path,
    features: Sequence[Feature],
    crs: str,
    driver: str,
    layer: str,
    layer_options: dict[str, str],
    promote: bool,
    *,
    append: bool = False,
) -> None:
    feats = list(features)
    geoms = np.empty(len(feats), dtype=object)
    geoms[:] = [f.geometry for f in feats]
    names, arrays = _field_arrays(feats)
    gtype, to_multi = _geometry_type(geoms) if len(geoms) else ("Polygon", False)
    if to_multi and not promote:  # keep each geometry's own type (GeoJSON allows a mix)
        gtype, to_multi = "Unknown", False
    pyogrio.raw.write(
        tmp,
        shapely.to_wkb(geoms) if len(geoms) else np.array([], dtype=object),
        arrays,
        names,
        layer=layer,
        driver=driver,
        geometry_type=gtype,
        crs=crs,
        promote_to_multi=to_multi,
        layer_options=layer_options,
        append=append,
    )


def _write_ogr(
    features: Sequence[Feature],
    path: PathLike,
    crs: str,
    driver: str,
    layer: str,
    layer_options: dict[str, str],
    promote: bool,
    style_qml: str | None = None,
) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.unlink()  # GDAL must create the file itself (an empty GeoPackage is not a valid one)
        _write_layer(tmp, features, crs, driver, layer, layer_options, promote)
        if style_qml is not None:
            write_layer_style(tmp, layer, style_qml)
    return target


def write_geojson(features: Sequence[Feature], path: PathLike, crs: Any) -> Path:
    """Write features as RFC 7946 GeoJSON (EPSG:4326, lon/lat order) atomically; returns ``path``.

    ``crs`` is the CRS the feature geometries are in (e.g. ``grid.crs`` for :func:`polygonize`
    output); geometries are transformed to EPSG:4326 with pyproj ``always_xy=True`` and polygon
    exteriors oriented counter-clockwise. Coordinates keep 7 decimals (about 1 cm). Properties become
    GeoJSON properties (ints, floats, bools, strings; missing values null).
    """
    src = normalize_crs(crs)
    feats = list(features)
    geoms = [to_lonlat(f.geometry, src) for f in feats]
    ll = [Feature(shapely.orient_polygons(g), f.properties) for g, f in zip(geoms, feats, strict=True)]
    options = {"RFC7946": "YES", "COORDINATE_PRECISION": "7"}
    return _write_ogr(ll, path, WGS84, "GeoJSON", Path(path).stem, options, promote=False)


def write_gpkg(
    features: Sequence[Feature], path: PathLike, crs: Any, layer: str = "features", *, style_qml: str | None = None
) -> Path:
    """Write features to a GeoPackage layer in their own ``crs`` atomically; returns ``path``.

    ``style_qml`` (see :mod:`common.geo.style`) is stored as the layer's default style in the
    ``layer_styles`` table, so QGIS opens the layer styled.

    A layer mixing Polygons and MultiPolygons (as :func:`polygonize` can return) is written as
    MultiPolygon, which GIS software expects of a GeoPackage layer.

    The file is written under a temporary name beside ``path`` and renamed, so an existing
    GeoPackage is replaced whole (other layers in it are not kept).
    """
    return _write_ogr(list(features), path, normalize_crs(crs), "GPKG", layer, {}, promote=True, style_qml=style_qml)


def write_gpkg_layers(path: PathLike, crs: Any, layers: Mapping[str, tuple[Sequence[Feature], str | None]]) -> Path:
    """Write several layers ``{name: (features, style_qml or None)}`` into one GeoPackage in ``crs``, atomically
    (all layers or none; an existing file is replaced whole); each as :func:`write_gpkg` writes one."""
    target = Path(path)
    crs_text = normalize_crs(crs)
    with atomic_path(target) as tmp:
        tmp.unlink()  # GDAL must create the file itself (an empty GeoPackage is not a valid one)
        for i, (name, (features, _qml)) in enumerate(layers.items()):
            _write_layer(tmp, features, crs_text, "GPKG", name, {}, True, append=i > 0)
        for name, (_features, qml) in layers.items():
            if qml is not None:
                write_layer_style(tmp, name, qml)
    return target


# -- reading --------------------------------------------------------------------------------------
def _csv_columns(path: Path) -> list[str]:
    """Header of a CSV; the separator is the most frequent of , ; tab | in the first line (as GDAL detects it)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        first = fh.readline()
    if not first.strip():
        raise UserError(f"CSV {path} is empty; expected a header row with lon/lat (or x/y) columns")
    delimiter = max(",;\t|", key=first.count)
    header = next(csv.reader([first], delimiter=delimiter))
    return [h.strip() for h in header]


def _pick(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for name in wanted:
        if name in lower:
            return lower[name]
    return None


def _first_data_layer(path: Path) -> str | None:
    """A GeoPackage's first layer that is not its ``layer_styles`` table (None: let OGR choose or fail)."""
    try:
        names = [str(n) for n, _g in pyogrio.list_layers(path)]
    except _PYOGRIO_ERRORS:
        return None
    data = [n for n in names if n != "layer_styles"]
    return data[0] if data else None


def read_vector(
    path: PathLike,
    *,
    where: str | None = None,
    to_crs: Any = None,
    layer: str | int | None = None,
    crs: Any = None,
    x: str | None = None,
    y: str | None = None,
) -> VectorData:
    """Read a vector file into shapely geometries and an attribute table.

    * Formats: anything OGR reads (GeoPackage, shapefile, GeoJSON, FlatGeobuf, ...), and ``.csv`` /
      ``.tsv`` (comma, semicolon, tab or pipe separated) with point coordinates: columns ``lon`` /
      ``longitude`` / ``lng`` and ``lat`` / ``latitude`` (EPSG:4326), or ``x`` / ``easting`` and ``y`` /
      ``northing`` with ``crs`` given; ``x=`` / ``y=`` name other columns. The coordinate columns stay
      in the table; column types are detected from the values.
    * ``where``: OGR SQL attribute filter, e.g. ``"Year_obs >= 2005"`` or ``"size = 'large'"``, for all
      formats including CSV.
    * ``layer``: layer name or index for multi-layer files (default: the first).
    * ``crs``: the data's CRS when the file has none (CSV x/y, a shapefile without .prj); it
      overrides nothing when the file has its own.
    * ``to_crs``: transform the geometries to this CRS.

    Rows without a geometry (e.g. empty coordinates) are dropped with a warning. A missing file, an
    unreadable file or bad ``where``, no CRS, or no features left raise a one-line ``UserError``.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"vector file not found: {p} (expected GeoPackage, shapefile, GeoJSON or CSV)")
    if p.is_dir() and p.suffix.lower() != ".gdb":
        raise UserError(f"vector path is a folder, expected a file: {p}")
    options: dict[str, str] = {}
    src_crs: str | None = None
    if p.suffix.lower() in (".csv", ".tsv"):
        columns = _csv_columns(p)
        xcol = x or _pick(columns, _LON_NAMES)
        ycol = y or _pick(columns, _LAT_NAMES)
        lonlat = x is None and y is None and xcol is not None and ycol is not None
        if xcol is None or ycol is None:
            xcol, ycol = _pick(columns, _X_NAMES), _pick(columns, _Y_NAMES)
        if xcol is None or ycol is None or xcol not in columns or ycol not in columns:
            raise UserError(
                f"CSV {p} has no coordinate columns; expected lon/lat (longitude/latitude) or x/y with crs=, "
                f"found {', '.join(columns[:12])}"
            )
        if crs is None and not lonlat:
            raise UserError(f"CSV {p} has coordinates in {xcol}/{ycol} but no CRS; pass crs= (e.g. 'EPSG:32633')")
        src_crs = normalize_crs(crs if crs is not None else WGS84)
        options = {
            "X_POSSIBLE_NAMES": xcol,
            "Y_POSSIBLE_NAMES": ycol,
            "KEEP_GEOM_COLUMNS": "YES",
            "AUTODETECT_TYPE": "YES",
            "AUTODETECT_SIZE_LIMIT": "0",
        }
    if layer is None and p.suffix.lower() == ".gpkg":
        layer = _first_data_layer(p)
    try:
        meta, _, wkb, field_data = pyogrio.raw.read(p, layer=layer, where=where, **options)
    except _PYOGRIO_ERRORS as exc:
        what = f" with where={where!r}" if where else ""
        raise UserError(f"cannot read vector file {p}{what}: {first_line(exc)}") from None
    if src_crs is None:
        if meta["crs"] is not None:
            src_crs = normalize_crs(meta["crs"])
        elif crs is not None:
            src_crs = normalize_crs(crs)
        else:
            raise UserError(f"vector file {p} has no CRS; pass crs= or add one (e.g. a .prj for a shapefile)")
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.full(len(field_data[0]) if field_data else 0, None)
    table = pd.DataFrame({name: arr for name, arr in zip(meta["fields"], field_data, strict=True)})
    missing = np.array([g is None or g.is_empty for g in geoms], dtype=bool)
    if missing.any():
        if not missing.all():
            warnings.warn(f"{p}: dropped {int(missing.sum())} of {len(geoms)} rows without a geometry", stacklevel=2)
        geoms = geoms[~missing]
        table = table.loc[~missing].reset_index(drop=True)
    if len(geoms) == 0:
        what = f" match where={where!r}" if where else " have a geometry"
        raise UserError(f"no features in {p}{what}; expected at least one")
    if to_crs is not None:
        dst = normalize_crs(to_crs)
        geoms = transform_geometries(geoms, src_crs, dst)
        src_crs = dst
    return VectorData(np.asarray(geoms, dtype=object), table, src_crs)


# -- rasterizing ----------------------------------------------------------------------------------
def _geometries(geometries: Iterable[Any]) -> np.ndarray:
    out = [g.geometry if isinstance(g, Feature) else g for g in geometries]
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr[[g is not None and not g.is_empty for g in arr]] if len(arr) else arr


def _utm_epsg(lon: float, lat: float) -> int:
    if lat >= 84.0:
        return 32661  # UPS North
    if lat <= -80.0:
        return 32761  # UPS South
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def utm_crs(lon: float, lat: float) -> str:
    """The metric CRS (UTM zone, UPS near the poles) of a lon/lat point, as ``"EPSG:n"``."""
    return f"EPSG:{_utm_epsg(lon, lat)}"


def _buffer_metres(geoms: np.ndarray, crs: str, buffer_m: float) -> np.ndarray:
    """Buffer each geometry by ``buffer_m`` metres, in ``crs`` units for projected CRSs, else in its UTM zone."""
    parsed = CRS.from_user_input(crs)
    if not parsed.is_geographic:
        factor = parsed.axis_info[0].unit_conversion_factor if parsed.axis_info else 1.0
        return shapely.buffer(geoms, buffer_m / factor)
    centroids = shapely.centroid(to_lonlat(geoms, crs))
    zones = np.array([_utm_epsg(c.x, c.y) for c in centroids])
    out = np.empty(len(geoms), dtype=object)
    for epsg in np.unique(zones):
        sel = zones == epsg
        local = transform_geometries(geoms[sel], crs, f"EPSG:{epsg}")
        out[sel] = transform_geometries(shapely.buffer(local, buffer_m), f"EPSG:{epsg}", crs)
    return out


def buffer_m(geometries: Any, crs: Any, metres: float) -> Any:
    """Geometries (one shapely geometry or an array) in ``crs`` grown by ``metres`` on the ground, still in ``crs``.

    Projected CRS: a buffer in its units converted from metres; geographic CRS: each geometry is buffered
    in the UTM zone of its centroid (UPS near the poles) and transformed back (as :func:`rasterize`).
    """
    if not math.isfinite(metres) or metres < 0:
        raise UserError(f"buffer of {metres} m: expected a finite distance >= 0")
    single = isinstance(geometries, BaseGeometry)
    geoms = np.asarray([geometries] if single else list(geometries), dtype=object)
    out = _buffer_metres(geoms, normalize_crs(crs), float(metres)) if metres > 0 else geoms
    return out[0] if single else out


def rasterize(
    geometries: Iterable[Any],
    grid: Grid,
    *,
    crs: Any = None,
    buffer_m: float = 0.0,
    all_touched: bool = False,
) -> np.ndarray:
    """Burn geometries into a ``(rows, cols)`` uint8 mask on ``grid``: 1 inside (or touched), 0 elsewhere.

    * ``geometries``: shapely geometries or :class:`Feature` s, in ``crs`` (default: the grid's CRS).
    * ``buffer_m``: grow each geometry by this many metres first (points become discs, lines
      corridors). In a projected CRS the buffer is in its units converted from metres; in a
      geographic CRS each geometry is buffered in the UTM zone of its centroid (UPS near the poles)
      and transformed back, so the buffer is metres on the ground (accurate to ~0.1% for features a
      few hundred km across or less).
    * ``all_touched``: burn every pixel the geometry touches, not only those whose centre is inside.
      A point or line without buffer burns the pixels it falls on either way.
    """
    src = grid.crs if crs is None else normalize_crs(crs)
    geoms = _geometries(geometries)
    out_shape = grid.shape
    if len(geoms) == 0:
        return np.zeros(out_shape, dtype=np.uint8)
    if buffer_m < 0:
        raise ValueError(f"buffer_m must be >= 0, got {buffer_m}")
    if buffer_m > 0:
        geoms = _buffer_metres(geoms, src, float(buffer_m))
    geoms = transform_geometries(geoms, src, grid.crs)
    return rasterio.features.rasterize(
        ((g, 1) for g in geoms if g is not None and not g.is_empty),
        out_shape=out_shape,
        transform=grid.transform,
        fill=0,
        all_touched=all_touched,
        dtype="uint8",
    )


def distance_to(geometries: Iterable[Any], grid: Grid, *, crs: Any = None) -> np.ndarray:
    """Distance in metres from each cell centre to the nearest feature: ``(rows, cols)`` float32.

    Features are first rasterized with ``all_touched=True`` (their cells get 0); each other cell gets
    the distance between its centre and the centre of the nearest feature cell, so the result is
    within about half a pixel diagonal of the distance to the feature itself.

    * Projected grid: exact Euclidean distance transform (``scipy.ndimage.distance_transform_edt``
      with ``sampling=(dy, dx)`` in metres).
    * Geographic grid: the nearest feature cell is found by a distance transform with the pixel
      size of the grid's middle row, then the geodesic distance (WGS84) to that cell's centre is
      measured. Where pixel widths vary strongly over the grid the cell picked may not be the very
      nearest, so distances can be slightly too large far from features (the error grows with the
      grid's latitude span; small for a scene).

    Only features on the grid count: pad the grid to include features just outside it. Raises
    ``UserError`` when no feature falls on the grid.
    """
    mask = rasterize(geometries, grid, crs=crs, all_touched=True)
    if not mask.any():
        raise UserError(f"none of the features falls on the {grid.height}x{grid.width} grid; cannot measure distances")
    dy, dx = pixel_size_m(grid)
    background = mask == 0
    if not grid.is_geographic:
        return ndimage.distance_transform_edt(background, sampling=(dy[0], dx[0])).astype(np.float32)
    mid = grid.height // 2
    _, (ri, ci) = ndimage.distance_transform_edt(background, sampling=(dy[mid], dx[mid]), return_indices=True)
    geod = CRS.from_user_input(grid.crs).get_geod() or _GEOD
    out = np.empty(grid.shape, dtype=np.float32)
    rows = np.arange(grid.width)
    for r in range(grid.height):  # row by row keeps the temporaries small
        x0, y0 = grid.cell_centres(np.full(grid.width, r), rows)
        x1, y1 = grid.cell_centres(ri[r], ci[r])
        _, _, dist = geod.inv(x0, y0, x1, y1)
        out[r] = dist
    out[mask == 1] = 0.0
    return out
