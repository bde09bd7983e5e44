"""Raster grids: where a raster's pixels are, in which CRS, and how big they are on the ground.

A :class:`Grid` is the georeferencing of a raster without its pixels: a CRS (normalised to an
``"EPSG:32629"``-style string where the CRS has an exact authority code, else WKT), an affine
``transform`` mapping (col, row) pixel corners to CRS coordinates, and a ``width`` x ``height`` in
pixels. Arrays on a grid have shape ``(height, width)`` (row 0 = the top = north; grids are
always north-up: no rotation, positive x pixel size, negative y pixel size in the transform).

Also here: true metres per pixel for any CRS (:func:`pixel_size_m`), how much of a grid another
raster covers (:func:`coverage_fraction`), and windows for block-wise processing
(:func:`iter_windows`, :func:`tile_windows`). Windows are ``rasterio.windows.Window`` objects
(``col_off, row_off, width, height``, in pixels of the grid).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.coords import BoundingBox
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from common.errors import UserError
from common.geo._dataset import PathLike, open_raster

__all__ = [
    "Grid",
    "normalize_crs",
    "pixel_size_m",
    "coverage_fraction",
    "iter_windows",
    "tile_windows",
]

Bounds = tuple[float, float, float, float]


def normalize_crs(crs: Any) -> str:
    """A CRS as a string: ``"EPSG:4326"``-style where an authority code matches exactly, else WKT2.

    Accepts anything ``pyproj.CRS.from_user_input`` accepts (``"EPSG:32629"``, an int EPSG code,
    WKT, a PROJ string, a ``rasterio.crs.CRS`` or a ``pyproj.CRS``). Raises ``UserError`` for a value
    that is not a CRS.
    """
    if crs is None:
        raise UserError("CRS is missing; expected an EPSG code such as 'EPSG:32629' or a WKT string")
    try:
        parsed = CRS.from_user_input(crs)
    except Exception as exc:  # pyproj.exceptions.CRSError and friends
        raise UserError(f"not a valid CRS: {str(crs)[:80]!r} ({exc})") from None
    auth = parsed.to_authority(min_confidence=100)
    if auth is not None:
        return f"{auth[0]}:{auth[1]}"
    return parsed.to_wkt()


def _as_pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float, np.integer, np.floating)):
        pair = (float(value), float(value))
    else:
        vals = tuple(float(v) for v in value)
        if len(vals) != 2:
            raise ValueError(f"{name} must be a number or a pair (x, y), got {value!r}")
        pair = (vals[0], vals[1])
    if not all(math.isfinite(v) and v > 0 for v in pair):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: ``crs``, ``transform`` (pixel corner -> CRS coordinates), ``width``, ``height``.

    ``crs`` is normalised on construction (see :func:`normalize_crs`), so two grids in the same CRS
    compare equal whatever form the CRS was given in. ``transform`` maps ``(col, row)`` of pixel
    *corners* to ``(x, y)``; the centre of pixel ``(row, col)`` is ``transform @ (col + 0.5, row + 0.5)``.
    Arrays on the grid have shape ``(height, width)``, or ``(bands, height, width)``.
    """

    crs: str
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "crs", normalize_crs(self.crs))
        t = self.transform
        if not isinstance(t, Affine):
            t = Affine(*tuple(t)[:6])
            object.__setattr__(self, "transform", t)
        if t.b != 0 or t.d != 0 or not t.a > 0 or not t.e < 0:
            raise UserError(
                f"grid transform must be north-up (no rotation, x size > 0, y size < 0), got {tuple(t)[:6]}"
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"grid {name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_raster(cls, path: PathLike) -> Grid:
        """The grid of an existing raster file (any GDAL-readable raster with a CRS)."""
        with open_raster(path) as ds:
            try:
                return cls(ds.crs, ds.transform, ds.width, ds.height)
            except UserError as exc:
                raise UserError(f"raster {path}: {exc}") from None

    @classmethod
    def from_bounds(cls, bounds: Bounds, crs: Any, resolution: float | Sequence[float]) -> Grid:
        """A grid with its top-left corner at ``(left, top)`` covering ``bounds = (left, bottom, right, top)``.

        ``resolution`` is the pixel size in CRS units (metres for UTM, degrees for EPSG:4326), one
        number or ``(xres, yres)``. ``width = ceil((right - left) / xres)`` (likewise height), so the
        grid covers the bounds and may extend up to one pixel past ``right``/``bottom``.
        """
        left, bottom, right, top = (float(v) for v in bounds)
        if not (right > left and top > bottom):
            raise UserError(
                f"bounds must be (left, bottom, right, top) with right > left and top > bottom, got {bounds}"
            )
        xres, yres = _as_pair(resolution, "resolution")
        width = max(1, math.ceil((right - left) / xres - 1e-9))
        height = max(1, math.ceil((top - bottom) / yres - 1e-9))
        return cls(crs, Affine(xres, 0.0, left, 0.0, -yres, top), width, height)

    def to_crs(self, crs: Any, resolution: float | Sequence[float] | None = None) -> Grid:
        """A grid in ``crs`` covering this grid (GDAL's default warp extent, as ``gdalwarp -t_srs``).

        Without ``resolution`` GDAL picks one that keeps about the same number of pixels.
        """
        kwargs: dict[str, Any] = {}
        if resolution is not None:
            kwargs["resolution"] = _as_pair(resolution, "resolution")
        dst_crs = normalize_crs(crs)
        with warnings.catch_warnings():  # rasterio 1.4 composes Affines with `*`, which affine 3 flags
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            transform, width, height = calculate_default_transform(
                self.crs, dst_crs, self.width, self.height, *self.bounds, **kwargs
            )
        return Grid(dst_crs, transform, width, height)

    def subgrid(self, window: Window) -> Grid:
        """The grid of ``window`` (same CRS and pixel size, origin at the window's top-left corner)."""
        w = Window(*window.flatten()) if not isinstance(window, Window) else window
        return Grid(self.crs, self.window_transform(w), int(w.width), int(w.height))

    # -- properties ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels: the shape of a single-band array on this grid."""
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """``(xres, yres)``: pixel width and height in CRS units, both positive (rasterio's order)."""
        return (self.transform.a, -self.transform.e)

    @property
    def bounds(self) -> BoundingBox:
        """``BoundingBox(left, bottom, right, top)`` of the pixel edges, in CRS units."""
        t = self.transform
        left, top = t.c, t.f
        return BoundingBox(left, top + t.e * self.height, left + t.a * self.width, top)

    @property
    def is_geographic(self) -> bool:
        """True when the CRS is geographic (coordinates in degrees of longitude/latitude)."""
        return CRS.from_user_input(self.crs).is_geographic

    @property
    def pyproj_crs(self) -> CRS:
        """The CRS as a ``pyproj.CRS``."""
        return CRS.from_user_input(self.crs)

    def window_transform(self, window: Window) -> Affine:
        """The affine transform of ``window``'s top-left pixel corner (same pixel size)."""
        return self.transform @ Affine.translation(float(window.col_off), float(window.row_off))

    def full_window(self) -> Window:
        """``Window(0, 0, width, height)``: the whole grid."""
        return Window(0, 0, self.width, self.height)

    def geometry_in(self, geometry: shapely.Geometry, crs: Any) -> shapely.Geometry:
        """``geometry`` (given in ``crs``) in the grid's CRS; its edges are densified first (every 0.001 degree or
        100 m), so the curved image of a straight edge stays close to it."""
        src = normalize_crs(crs)
        if src == self.crs:
            return geometry
        step = 0.001 if CRS.from_user_input(src).is_geographic else 100.0
        tr = Transformer.from_crs(src, self.crs, always_xy=True)
        return shapely.transform(shapely.segmentize(geometry, step), lambda x, y: tr.transform(x, y), interleaved=False)

    def window_of(self, geometry: shapely.Geometry, crs: Any) -> Window:
        """The window of whole pixels around ``geometry`` (given in ``crs``), **not** clipped to the grid.

        The window may reach past any edge of the grid (negative offsets, or beyond ``width``/``height``):
        clip it with :meth:`clip`. It is at least one pixel.
        """
        left, bottom, right, top = self.geometry_in(geometry, crs).bounds
        if not all(math.isfinite(v) for v in (left, bottom, right, top)):
            raise UserError(f"a geometry does not transform from {normalize_crs(crs)} to the grid's CRS {self.crs}")
        t = self.transform
        c0, c1 = math.floor((left - t.c) / t.a), math.ceil((right - t.c) / t.a)
        r0, r1 = math.floor((top - t.f) / t.e), math.ceil((bottom - t.f) / t.e)
        return Window(c0, r0, max(1, c1 - c0), max(1, r1 - r0))

    def clip(self, window: Window) -> Window | None:
        """``window`` cut to the grid, or ``None`` when they do not overlap."""
        c0, r0 = max(0, int(window.col_off)), max(0, int(window.row_off))
        c1 = min(self.width, int(window.col_off + window.width))
        r1 = min(self.height, int(window.row_off + window.height))
        if c1 <= c0 or r1 <= r0:
            return None
        return Window(c0, r0, c1 - c0, r1 - r0)

    def to_profile(self, dtype: Any = "float32", nodata: float | None = None, count: int = 1) -> dict[str, Any]:
        """A rasterio profile (``rasterio.open(path, "w", **profile)``) for a tiled, deflate GeoTIFF on this grid."""
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "crs": self.crs,
            "transform": self.transform,
            "width": self.width,
            "height": self.height,
            "count": int(count),
            "dtype": np.dtype(dtype).name,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
        }
        if self.width < 256 or self.height < 256:
            profile.update(tiled=False)
            del profile["blockxsize"], profile["blockysize"]
        return profile

    def cell_centres(self, rows: Any = None, cols: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` CRS coordinates of pixel centres.

        ``rows`` and ``cols`` are integer arrays (broadcast together) of pixel indices; without them,
        the centres of every pixel, each ``(height, width)`` float64.
        """
        if rows is None and cols is None:
            rows, cols = np.mgrid[0 : self.height, 0 : self.width]
        elif rows is None or cols is None:
            raise ValueError("cell_centres needs both rows and cols, or neither")
        r = np.asarray(rows, dtype=np.float64) + 0.5
        c = np.asarray(cols, dtype=np.float64) + 0.5
        r, c = np.broadcast_arrays(r, c)
        t = self.transform
        return t.a * c + t.c, t.e * r + t.f

    def bounds_in(self, crs: Any) -> BoundingBox:
        """The grid's bounds transformed to ``crs`` (edges densified, so curved edges are enclosed)."""
        dst = normalize_crs(crs)
        left, bottom, right, top = transform_bounds(self.crs, dst, *self.bounds, densify_pts=21)
        return BoundingBox(left, bottom, right, top)


def _row_centre_y(grid: Grid) -> np.ndarray:
    t = grid.transform
    return t.f + t.e * (np.arange(grid.height, dtype=np.float64) + 0.5)


def pixel_size_m(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """True ground size of the pixels of each row, in metres: ``(dy_m, dx_m)``, each shape ``(height,)``.

    * Geographic CRS (degrees): geodesic lengths on the CRS's ellipsoid (``pyproj.Geod``) at each
      row's centre latitude: ``dx_m`` is the distance between two points ``xres`` degrees apart along
      that parallel, ``dy_m`` the meridian distance of ``yres`` degrees centred on it. At the equator
      a 1-degree pixel is about 111.3 km in both; at 60 N ``dx_m`` is about half of that.
    * Projected CRS: the pixel size in CRS units times the unit's size in metres (1 for UTM metres,
      0.3048006 for US survey feet), the same for every row. The projection's own scale error is not
      corrected (under 0.1% within a UTM zone).
    """
    xres, yres = grid.res
    crs = grid.pyproj_crs
    if crs.is_geographic:
        geod = crs.get_geod() or Geod(ellps="WGS84")
        lat = np.clip(_row_centre_y(grid), -90.0, 90.0)
        lon0 = np.full_like(lat, grid.transform.c)
        _, _, dx = geod.inv(lon0, lat, lon0 + xres, lat)
        lat_lo = np.clip(lat - yres / 2, -90.0, 90.0)
        lat_hi = np.clip(lat + yres / 2, -90.0, 90.0)
        _, _, dy = geod.inv(lon0, lat_lo, lon0, lat_hi)
        return np.asarray(dy, dtype=np.float64), np.asarray(dx, dtype=np.float64)
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    dy = np.full(grid.height, yres * factor, dtype=np.float64)
    dx = np.full(grid.height, xres * factor, dtype=np.float64)
    return dy, dx


def _densified_box(bounds: Bounds) -> shapely.Polygon:
    left, bottom, right, top = (float(v) for v in bounds)
    box = shapely.box(left, bottom, right, top)
    return shapely.segmentize(box, max(right - left, top - bottom) / 64.0)


def _box_in(bounds: Bounds, src: str, dst: str) -> shapely.Geometry | None:
    """The densified box ``bounds`` (in ``src``) transformed to ``dst``; None where it does not transform."""
    box = _densified_box(bounds)
    if src == dst:
        return box
    tr = Transformer.from_crs(src, dst, always_xy=True)
    out = shapely.transform(box, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    if not np.isfinite(shapely.get_coordinates(out)).all():
        return None
    return out if out.is_valid else shapely.make_valid(out)


def coverage_fraction(grid: Grid, other_bounds: Bounds, other_crs: Any) -> float:
    """Fraction (0..1) of ``grid``'s area inside ``other_bounds = (left, bottom, right, top)`` given in ``other_crs``.

    The grid's box (edges densified) is transformed into the other CRS and intersected with the
    other box there; the fraction is of planar areas in that CRS (for a geographic CRS, square
    degrees: fine for the yes/partly/no question this answers). Transforming the grid, usually the
    smaller box, keeps this right for a global EPSG:4326 raster over a UTM scene; where the grid's box
    does not transform, the other box is transformed into the grid's CRS instead. Use it to check
    that a DEM covers a scene: ``coverage_fraction(scene_grid, dem_grid.bounds, dem_grid.crs)``.
    """
    other = normalize_crs(other_crs)
    other_box = _densified_box(other_bounds)
    mine = _box_in(tuple(grid.bounds), grid.crs, other)
    if mine is not None and mine.area > 0:
        return float(shapely.intersection(mine, other_box).area / mine.area)
    theirs = _box_in(tuple(other_bounds), other, grid.crs)
    if theirs is None:
        return 0.0
    box = shapely.box(*grid.bounds)
    return float(shapely.intersection(box, theirs).area / box.area)


def iter_windows(grid: Grid, block_rows: int, block_cols: int | None = None) -> Iterator[Window]:
    """Windows covering ``grid`` without overlap, row of blocks by row of blocks (row-major order).

    Each window is ``block_rows`` x ``block_cols`` pixels (``block_cols=None``: the full width, i.e.
    strips), smaller at the bottom and right edges.
    """
    if block_rows < 1 or (block_cols is not None and block_cols < 1):
        raise ValueError(f"block sizes must be >= 1, got block_rows={block_rows}, block_cols={block_cols}")
    bc = grid.width if block_cols is None else int(block_cols)
    for row in range(0, grid.height, int(block_rows)):
        h = min(int(block_rows), grid.height - row)
        for col in range(0, grid.width, bc):
            yield Window(col, row, min(bc, grid.width - col), h)


def _tile_offsets(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    offsets = list(range(0, size - tile + 1, stride))
    if offsets[-1] + tile < size:
        offsets.append(size - tile)
    return offsets


def tile_windows(grid: Grid, tile: int | tuple[int, int], overlap: int | tuple[int, int] = 0) -> list[Window]:
    """Overlapping ``tile`` x ``tile`` windows covering the whole grid, row-major.

    ``tile`` and ``overlap`` are pixels, one number or ``(rows, cols)``. Tiles start every
    ``tile - overlap`` pixels; the last tile in each direction is aligned to the grid's far edge (so
    it may overlap its neighbour by more than ``overlap``) and every tile has the full tile size,
    except where the grid itself is smaller than a tile (then the tile is the whole grid extent).
    """
    th, tw = (tile, tile) if isinstance(tile, (int, np.integer)) else tile
    oh, ow = (overlap, overlap) if isinstance(overlap, (int, np.integer)) else overlap
    if th < 1 or tw < 1:
        raise ValueError(f"tile must be >= 1 pixel, got {tile!r}")
    if not (0 <= oh < th and 0 <= ow < tw):
        raise ValueError(f"overlap must be >= 0 and smaller than the tile, got overlap={overlap!r}, tile={tile!r}")
    rows = _tile_offsets(grid.height, int(th), int(th - oh))
    cols = _tile_offsets(grid.width, int(tw), int(tw - ow))
    return [Window(c, r, min(int(tw), grid.width - c), min(int(th), grid.height - r)) for r in rows for c in cols]
