"""Small rasters built in code for the ``common.geo`` tests (written with rasterio directly)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine

from common.geo import Grid

UTM29 = "EPSG:32629"  # the real Sentinel-2 tile's CRS


def utm_grid(
    width: int = 64, height: int = 48, res: float = 10.0, x0: float = 500_000.0, y0: float = 2_750_000.0
) -> Grid:
    """A north-up grid in UTM 29N (about 24.9 N, 9 W) with square ``res`` metre pixels."""
    return Grid(UTM29, Affine(res, 0, x0, 0, -res, y0), width, height)


def geo_grid(width: int = 64, height: int = 48, res: float = 1e-4, lon0: float = 6.5, lat0: float = 45.0) -> Grid:
    """A north-up EPSG:4326 grid with its top-left corner at (lon0, lat0), ``res`` degrees per pixel."""
    return Grid("EPSG:4326", Affine(res, 0, lon0, 0, -res, lat0), width, height)


def write_tif(path: Path, array: np.ndarray, grid: Grid | None, nodata: float | None = None, **extra) -> Path:
    """Write ``array`` ((rows, cols) or (bands, rows, cols)) as a plain GeoTIFF; ``grid=None`` gives no CRS."""
    arr = array if array.ndim == 3 else array[None]
    profile = dict(
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype.name,
        nodata=nodata,
    )
    if grid is not None:
        profile.update(crs=grid.crs, transform=grid.transform)
    profile.update(extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
    return path


def smooth_field(grid: Grid) -> np.ndarray:
    """A smooth float32 field (a few long-wavelength sines) on ``grid``, values about 100..300."""
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width].astype(np.float64)
    return (200 + 60 * np.sin(rows / 9.0) + 40 * np.cos(cols / 13.0) + 0.3 * rows).astype(np.float32)
