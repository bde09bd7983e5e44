"""Paired regions laid out as a georeferenced world: a Sentinel-2-like scene, a DEM, factor rasters,
region polygons and a landslide inventory, all on one UTM grid, as an analyst would hand them over.

Demo material (:mod:`fusion.demo`): used by the quick start, the tests and the benchmarks, never by a library.

The main job (``pipelines.quickstart``) writes its held-out regions this way and then runs
``pipelines.assess`` on them, so the georeferenced path (scene reading, windowed segmentation, zonal
statistics of the factor rasters, fusion) is exercised on data whose truth is known.

Layout: region ``k`` occupies a ``size x size`` block of 10 m pixels at column ``k % cols``, row
``k // cols`` of a grid of blocks (``cols = ceil(sqrt(n))``), blocks ``gap`` pixels apart. The gaps
are nodata in every raster (the DEM repeats each block's edge pixel into the gap, so the slope of a
block's border pixels is defined), so each region keeps the terrain and the clouds of its own patch
(the patches were generated independently and do not join up). Files in ``folder``:

* ``scene/``: one uint16 COG per spectral band (``B01.tif`` ... ``B12.tif``, including ``B10``: the
  paired patches have the 14 L4S bands), digital numbers ``= L4S value x L4S band mean`` (scale 1e-4,
  offset 0, nodata 0), and ``scene.json`` (id, date, scale and offset per band). No ``SCL``: the clouds
  are painted into the bands, as in the training patches, and the model sees them as it did there.
* ``dem.tif``: float32 elevation in metres (``L4S DEM x 772.83``), nodata NaN; slope is derived from it
  (Horn) by the scene reader, as for a real DEM.
* ``factors/NAME.tif``: one raster per tabular feature, each region's block painted with its table
  value (float32, NaN nodata); categorical ones as uint8 class codes (nodata 255) with the names in the
  ``CLASSES`` dataset tag (JSON ``{"0": "shale", ...}``), which ``service.assess`` reads.
* ``regions.gpkg`` (the grid's CRS) and ``regions.geojson`` (EPSG:4326): one square per region, property
  ``region_id``.
* ``inventory.gpkg``: the landslide polygons of the ground-truth masks (property ``region_id``).

CRS: ``EPSG:32633`` (UTM 33N), origin at ``(400000, 5180000)`` m (southern Austria) unless given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from affine import Affine

from common.geo import CLASSES_TAG, Feature, Grid, polygonize, write_cog, write_geojson, write_gpkg
from imagery.data.bands import BANDS, L4S_BAND_MEANS

CLASS_NODATA = 255
SPECTRAL = [b for b in BANDS if b not in ("slope", "DEM")]


@dataclass(frozen=True)
class World:
    """Paths of a written world (module docstring) and its grid."""

    folder: Path
    scene: Path
    dem: Path
    factors: dict[str, Path]
    regions: Path
    regions_geojson: Path
    inventory: Path
    grid: Grid


def _file_name(band: str) -> str:
    """``B1`` -> ``B01``; ``B10`` stays (Sentinel-2 file spelling)."""
    return f"B{int(band[1:]):02d}"


def _layout(n: int, size: int, gap: int) -> tuple[int, int, int]:
    """``(cols, width_px, height_px)`` of the block grid for ``n`` regions."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    return cols, cols * (size + gap) + gap, rows * (size + gap) + gap


def _paint(values: np.ndarray, shape: tuple[int, int], offsets: list[tuple[int, int]], size: int, fill: float):
    out = np.full(shape, fill, dtype=values.dtype)
    for v, (r, c) in zip(values, offsets, strict=True):
        out[r : r + size, c : c + size] = v
    return out


def write_world(
    table: pd.DataFrame,
    images: np.ndarray,
    masks: np.ndarray,
    folder: str | Path,
    *,
    features: list[str],
    date: str = "2024-06-01",
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (400000.0, 5180000.0),
    gap: int = 2,
) -> World:
    """Write ``table`` (one row per region: ``region_id`` and the ``features``), ``images``
    ``(N, 14, size, size)`` in L4S units and ``masks`` ``(N, size, size)`` as a world in ``folder``."""
    n, _, size, _ = images.shape
    if len(table) != n or masks.shape != (n, size, size):
        raise ValueError(f"table ({len(table)} rows), images {images.shape} and masks {masks.shape} disagree")
    out = Path(folder)
    (out / "scene").mkdir(parents=True, exist_ok=True)
    (out / "factors").mkdir(exist_ok=True)
    cols, width, height = _layout(n, size, gap)
    grid = Grid(crs, Affine(10.0, 0, origin[0], 0, -10.0, origin[1]), width, height)
    offsets = [(gap + (k // cols) * (size + gap), gap + (k % cols) * (size + gap)) for k in range(n)]

    def mosaic(channel: np.ndarray, fill: float, dtype: str, halo: int = 0) -> np.ndarray:
        """Blocks of ``channel`` ``(N, size, size)`` on the grid; ``halo`` px of each block's edge repeated
        into the gap around it (the DEM: slope at a block's border pixels then needs no nodata neighbour)."""
        arr = np.full((height, width), fill, dtype=dtype)
        for k, (r, c) in enumerate(offsets):
            arr[r - halo : r + size + halo, c - halo : c + size + halo] = np.pad(channel[k], halo, mode="edge")
        return arr

    for i, band in enumerate(SPECTRAL):
        dn = np.clip(np.round(images[:, i] * float(L4S_BAND_MEANS[i])), 1, 65535)
        write_cog(
            out / "scene" / f"{_file_name(band)}.tif",
            mosaic(dn, 0, "uint16"),
            grid,
            0,
            tags={"band": band, "units": "DN"},
        )
    meta = {
        "id": "QUICKSTART_WORLD",
        "date": date,
        "product": "L2A",
        "crs": crs,
        "bands": {band: {"scale": 1e-4, "offset": 0.0} for band in SPECTRAL},
        "note": "synthetic world of paired regions (fusion.demo.world); clouds painted into the bands, no SCL",
        "synthetic": True,
    }
    (out / "scene" / "scene.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    dem_m = images[:, BANDS.index("DEM")] * float(L4S_BAND_MEANS[BANDS.index("DEM")])
    dem = mosaic(dem_m, np.nan, "float32", halo=max(0, min(1, gap // 2)))
    write_cog(out / "dem.tif", dem, grid, np.nan, tags={"units": "metres", "long_name": "elevation"})

    factors: dict[str, Path] = {}
    shape = (height, width)
    for name in features:
        col = table[name]
        path = out / "factors" / f"{name}.tif"
        if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
            levels = sorted(col.astype(str).unique())
            codes = col.astype(str).map({v: j for j, v in enumerate(levels)}).to_numpy(dtype=np.uint8)
            arr = _paint(codes, shape, offsets, size, CLASS_NODATA)
            tags = {
                CLASSES_TAG: json.dumps({str(j): v for j, v in enumerate(levels)}),
                "long_name": name,
                "units": "class",
            }
            write_cog(path, arr, grid, CLASS_NODATA, tags=tags)
        else:
            arr = _paint(col.to_numpy(dtype=np.float32), shape, offsets, size, np.nan)
            write_cog(path, arr, grid, np.nan, tags={"long_name": name})
        factors[name] = path

    ids = table["region_id"].to_numpy()
    t = grid.transform
    squares = [
        Feature(
            shapely.box(t.c + c * 10.0, t.f - (r + size) * 10.0, t.c + (c + size) * 10.0, t.f - r * 10.0),
            {"region_id": str(rid)},
        )
        for rid, (r, c) in zip(ids, offsets, strict=True)
    ]
    write_gpkg(squares, out / "regions.gpkg", crs, layer="regions")
    write_geojson(squares, out / "regions.geojson", crs)
    label = _paint(np.arange(1, n + 1, dtype=np.int32), shape, offsets, size, 0)
    truth = mosaic(masks.astype(np.uint8), 0, "uint8")
    slides = polygonize(truth, grid)
    for f in slides:
        x, y = f.geometry.representative_point().coords[0]
        row, col_ = int((t.f - y) / 10.0), int((x - t.c) / 10.0)
        f.properties["region_id"] = str(ids[label[row, col_] - 1])
    write_gpkg(slides, out / "inventory.gpkg", crs, layer="landslides")
    return World(
        out,
        out / "scene",
        out / "dem.tif",
        factors,
        out / "regions.gpkg",
        out / "regions.geojson",
        out / "inventory.gpkg",
        grid,
    )


__all__ = ["World", "write_world"]
