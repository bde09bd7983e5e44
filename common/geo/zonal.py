"""Zonal statistics: a region's cells on a grid, and a raster's mean or majority class over them.

A :class:`Zone` is one region seen on a grid: the window of the grid around it (clipped to the grid),
its cells in that window, and how many cells the whole region covers **on and off the grid** (its cells on
the grid scaled by the share of its area on the grid). Every share is of that whole count, so the part of a
region outside the grid counts as missing, exactly like a cloud or a nodata cell: a region 90 % outside a
scene has at most 10 % of its cells known, whatever the raster says about the part it sees.

* :func:`zone_of`: the zone of a geometry in any CRS.
* :func:`zonal_mean` / :func:`zonal_majority`: the mean of the finite values, or the most frequent class
  code named by the raster's ``CLASSES`` legend (:func:`common.geo.class_names`), ``None`` when the known
  cells are under ``min_share`` of the region.
* :class:`ZonalRaster`: one raster file warped onto the grid (bilinear, or nearest for classes), opened
  once and summarised per zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from rasterio.windows import Window

from common.geo._dataset import PathLike
from common.geo.grid import Grid, coverage_fraction, pixel_size_m
from common.geo.raster import RasterOnGrid, class_names
from common.geo.vector import rasterize

#: The least share of a region's cells with a known value for a zonal statistic (else ``None``).
MIN_SHARE = 0.5


@dataclass(frozen=True)
class Zone:
    """A region on a grid: ``window`` (clipped to the grid; ``None`` when no cell of the region is on it),
    ``inside`` ``(window.height, window.width)`` bool (the region's cells in the window), and ``cells``:
    the region's cells in all, on the grid or off it (>= 1)."""

    window: Window | None
    inside: np.ndarray
    cells: int

    @property
    def on_grid(self) -> float:
        """Share of the region's cells that lie on the grid (0..1)."""
        return float(self.inside.sum()) / self.cells

    def share(self, known: np.ndarray) -> float:
        """Share of the region's cells (all of them) where ``known`` ``(window shape)`` bool is true."""
        return float((known & self.inside).sum()) / self.cells

    def pixel_area_m2(self, grid: Grid) -> float:
        """True area of one pixel of the window, m² (mean over its rows); 0 when off the grid."""
        if self.window is None:
            return 0.0
        dy, dx = pixel_size_m(grid)
        rows = slice(int(self.window.row_off), int(self.window.row_off + self.window.height))
        return float(np.mean(dy[rows]) * np.mean(dx[rows]))


def zone_of(grid: Grid, geometry: Any, crs: Any) -> Zone:
    """The :class:`Zone` of ``geometry`` (a shapely polygon in ``crs``) on ``grid``.

    Cells are those whose centre is inside the polygon, burnt on the window clipped to the grid. The region's
    cells in all are those on the grid divided by the share of its area on the grid (the polygon cut to the
    grid's extent, areas in the grid's CRS), so a region wholly on the grid counts exactly its cells and no
    raster is made of the part off it. A polygon smaller than a pixel gets the pixel under the centre of its
    window on the grid.
    """
    win = grid.clip(grid.window_of(geometry, crs))
    local = grid.geometry_in(geometry, crs)
    on_grid = shapely.box(*grid.bounds).intersection(local).area / local.area if local.area > 0 else 1.0
    if win is None or on_grid <= 0:
        return Zone(None, np.zeros((0, 0), bool), 1)
    inside = rasterize([geometry], grid.subgrid(win), crs=crs).astype(bool)
    if not inside.any():  # a region smaller than a pixel: its centre pixel
        inside[inside.shape[0] // 2, inside.shape[1] // 2] = True
    n = int(inside.sum())
    cells = n if on_grid >= 1.0 - 1e-9 else max(n, round(n / on_grid))
    return Zone(win, inside, cells)


def zonal_mean(values: np.ndarray, zone: Zone, min_share: float = MIN_SHARE) -> float | None:
    """Mean of the finite ``values`` (the zone's window) over the zone's cells; ``None`` when the finite
    cells are under ``min_share`` of the region (cells off the grid count as not finite)."""
    finite = np.isfinite(values) & zone.inside
    if zone.window is None or not finite.any() or zone.share(finite) < min_share:
        return None
    return float(values[finite].mean())


def zonal_majority(
    codes: np.ndarray, zone: Zone, legend: dict[int, str] | None = None, min_share: float = MIN_SHARE
) -> str | None:
    """The most frequent class code (ties: the smallest) over the zone's cells, named by ``legend``
    (``{code: name}``; a code missing from it gives ``None``), or the code as text without a legend;
    ``None`` when the finite cells are under ``min_share`` of the region."""
    finite = np.isfinite(codes) & zone.inside
    if zone.window is None or not finite.any() or zone.share(finite) < min_share:
        return None
    values, counts = np.unique(codes[finite].astype(np.int64), return_counts=True)
    code = int(values[np.argmax(counts)])
    return str(code) if legend is None else legend.get(code)


class ZonalRaster:
    """One raster file seen on ``grid``, summarised per :class:`Zone`: the mean (bilinear), or for a
    ``categorical`` raster the majority class (nearest) named by its ``CLASSES`` tag.

    ``with ZonalRaster(path, grid) as r: r.value(zone)``; a raster that does not reach the grid at all
    gives ``None`` for every zone.
    """

    def __init__(self, path: PathLike, grid: Grid, categorical: bool = False, min_share: float = MIN_SHARE) -> None:
        src_grid = Grid.from_raster(path)
        self.path, self.categorical, self.min_share = path, categorical, min_share
        covers = coverage_fraction(grid, tuple(src_grid.bounds), src_grid.crs) > 0
        resampling = "nearest" if categorical else "bilinear"
        self.reader = RasterOnGrid(path, grid, resampling, 1) if covers else None
        self.legend: dict[int, str] | None = None

    def __enter__(self) -> ZonalRaster:
        if self.reader is not None:
            self.reader.__enter__()
            if self.categorical:
                self.legend = class_names(self.reader.tags, self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.reader is not None:
            self.reader.close()

    def value(self, zone: Zone) -> float | str | None:
        """The zone's mean or majority class; ``None`` when the raster covers under ``min_share`` of it."""
        if self.reader is None or zone.window is None:
            return None
        vals = self.reader.read(zone.window)
        if self.categorical:
            return zonal_majority(vals, zone, self.legend, self.min_share)
        return zonal_mean(vals, zone, self.min_share)


__all__ = ["MIN_SHARE", "Zone", "ZonalRaster", "zonal_majority", "zonal_mean", "zone_of"]
