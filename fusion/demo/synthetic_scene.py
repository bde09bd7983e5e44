"""A synthetic Sentinel-2 L2A scene on disk, any size up to a full 10980 x 10980 tile, written block by block.

Demo material (:mod:`fusion.demo`): used by the quick start, the tests and the benchmarks, never by a library.

For tests and ``benchmarks/scene_bench.py``: one COG per band at its real resolution (10 m: B02, B03, B04,
B08; 20 m: B05, B06, B07, B8A, B11, B12 and SCL; 60 m: B01, B09; no B10, as in L2A), uint16 digital
numbers (reflectance x 10000, nodata 0) in UTM (default EPSG:32629), plus ``dem.tif``: a float32 DEM in
**another CRS** (EPSG:4326, ~1 arc-second pixels) covering the scene with a margin.

Content (deterministic for a seed, computed from each pixel's coordinates, so any block can be generated
alone and memory stays at one block): vegetated ground with a smooth texture; bare-soil landslide scars
(ellipses, NDVI drops, SWIR rises), at most one per 2 km cell; clouds (SCL 9) as discs, at most one per
6 km cell, with ``cloud_fraction`` of the cells clouded; hills in the DEM. Scars and clouds come from a
hash of their cell, not from a random stream, so the scene is the same whatever the block order.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from affine import Affine

from common.geo import CogWriter, Grid, iter_windows
from imagery.data.bands import canonical_band

#: Sentinel-2 L2A bands (file name, resolution in m) as written; B10 (cirrus) does not exist in L2A.
S2_L2A_FILES: tuple[tuple[str, int], ...] = (
    ("B01", 60),
    ("B02", 10),
    ("B03", 10),
    ("B04", 10),
    ("B05", 20),
    ("B06", 20),
    ("B07", 20),
    ("B08", 10),
    ("B8A", 20),
    ("B09", 60),
    ("B11", 20),
    ("B12", 20),
)
# typical reflectance of vegetated ground and of a bare-soil scar, per band
_VEG = {"B01": 0.03, "B02": 0.04, "B03": 0.07, "B04": 0.05, "B05": 0.10, "B06": 0.25, "B07": 0.30}
_VEG |= {"B08": 0.32, "B8A": 0.33, "B09": 0.10, "B11": 0.18, "B12": 0.09}
_SOIL = {"B01": 0.08, "B02": 0.10, "B03": 0.13, "B04": 0.16, "B05": 0.19, "B06": 0.21, "B07": 0.22}
_SOIL |= {"B08": 0.23, "B8A": 0.24, "B09": 0.08, "B11": 0.32, "B12": 0.26}
SCAR_CELL_M = 2000.0
CLOUD_CELL_M = 6000.0


def _hash(i: np.ndarray, j: np.ndarray, salt: float) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per integer cell (i, j)."""
    v = np.sin(i * 12.9898 + j * 78.233 + salt * 37.719) * 43758.5453
    return v - np.floor(v)


def _scar(x: np.ndarray, y: np.ndarray, seed: int, density: float) -> np.ndarray:
    """Bool: inside a scar (an ellipse 80-400 m long, at most one per cell, ``density`` of the cells)."""
    i, j = np.floor(x / SCAR_CELL_M), np.floor(y / SCAR_CELL_M)
    has = _hash(i, j, seed + 0.1) < density
    cx = (i + 0.25 + 0.5 * _hash(i, j, seed + 0.2)) * SCAR_CELL_M
    cy = (j + 0.25 + 0.5 * _hash(i, j, seed + 0.3)) * SCAR_CELL_M
    a = 40 + 160 * _hash(i, j, seed + 0.4)
    b = a * (0.3 + 0.4 * _hash(i, j, seed + 0.5))
    th = math.pi * _hash(i, j, seed + 0.6)
    dx, dy = x - cx, y - cy
    u = dx * np.cos(th) + dy * np.sin(th)
    v = -dx * np.sin(th) + dy * np.cos(th)
    return has & ((u / a) ** 2 + (v / b) ** 2 <= 1.0)


def _cloud(x: np.ndarray, y: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    i, j = np.floor(x / CLOUD_CELL_M), np.floor(y / CLOUD_CELL_M)
    has = _hash(i, j, seed + 0.7) < fraction
    cx = (i + 0.5) * CLOUD_CELL_M
    cy = (j + 0.5) * CLOUD_CELL_M
    r = CLOUD_CELL_M * (0.2 + 0.25 * _hash(i, j, seed + 0.8))
    return has & ((x - cx) ** 2 + (y - cy) ** 2 <= r**2)


def _texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 0.5 * np.sin(x / 700.0) + 0.3 * np.cos(y / 900.0) + 0.2 * np.sin((x + y) / 300.0)


def dem_elevation(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Elevation (m) of the synthetic hills at ``(lon, lat)`` degrees."""
    return 900.0 + 350.0 * np.sin(lon * 60.0) * np.cos(lat * 70.0) + 120.0 * np.sin((lon + lat) * 250.0)


def write_synthetic_scene(
    folder: str | os.PathLike[str],
    size: int = 1098,
    *,
    seed: int = 0,
    crs: str = "EPSG:32629",
    origin: tuple[float, float] = (199980.0, 2800020.0),
    pixel_m: float = 10.0,
    scar_density: float = 0.3,
    cloud_fraction: float = 0.15,
    dem: bool = True,
    block_rows: int = 512,
    height: int | None = None,
) -> Path:
    """Write the scene (module docstring) into ``folder``; ``size`` = 10 m pixels per side (10980: a full tile).

    ``size`` (and ``height``, for a ``size`` wide strip of ``height`` rows) must be multiples of 6 so the 20 m
    and 60 m bands cover exactly the same extent. Writes a ``scene.json`` (id, date, product, scale 1e-4,
    offset 0 per band) and, with ``dem``, ``dem.tif``.
    """
    rows = size if height is None else int(height)
    if size < 6 or size % 6 or rows < 6 or rows % 6:
        raise ValueError(f"size and height must be positive multiples of 6 (10/20/60 m bands), got {size}, {rows}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    x0, y0 = origin
    for name, res in (*S2_L2A_FILES, ("SCL", 20)):
        r = pixel_m * res / 10.0
        grid = Grid(crs, Affine(r, 0, x0, 0, -r, y0), int(size * 10 // res), int(rows * 10 // res))
        dtype = "uint8" if name == "SCL" else "uint16"
        with CogWriter(out / f"{name}.tif", grid, dtype, 0, tags={"band": name}) as w:
            for win in iter_windows(grid, block_rows):
                sub = grid.subgrid(win)
                x, y = sub.cell_centres()
                scar = _scar(x, y, seed, scar_density)
                if name == "SCL":
                    values = np.where(scar, 5, 4).astype(np.uint8)
                    values[_cloud(x, y, seed, cloud_fraction)] = 9
                else:
                    refl = np.where(scar, _SOIL[name], _VEG[name]) * (1.0 + 0.15 * _texture(x, y))
                    values = np.clip(np.round(refl * 10000.0), 1, 65535).astype(np.uint16)
                w.write(values, win)
    if dem:
        grid10 = Grid(crs, Affine(pixel_m, 0, x0, 0, -pixel_m, y0), size, rows)
        left, bottom, right, top = grid10.bounds_in("EPSG:4326")
        margin = 0.01
        dem_grid = Grid.from_bounds(
            (left - margin, bottom - margin, right + margin, top + margin), "EPSG:4326", 1.0 / 3600.0
        )
        with CogWriter(out / "dem.tif", dem_grid, "float32", np.nan, tags={"units": "metres"}) as w:
            for win in iter_windows(dem_grid, block_rows):
                lon, lat = dem_grid.subgrid(win).cell_centres()
                w.write(dem_elevation(lon, lat).astype(np.float32), win)
    meta = {
        "id": f"SYNTHETIC_{size}x{rows}_{seed}",
        "date": "2024-06-01",
        "product": "L2A",
        "processing_baseline": "05.10",
        "crs": crs,
        "bands": {canonical_band(name): {"scale": 1e-4, "offset": 0.0} for name, _ in S2_L2A_FILES},
        "note": "synthetic scene (fusion.demo.synthetic_scene); DN written without the baseline-04 offset",
        "synthetic": True,
    }
    (out / "scene.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out


__all__ = ["S2_L2A_FILES", "dem_elevation", "write_synthetic_scene"]
