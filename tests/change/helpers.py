"""Write a Sen12Landslides patch as a local STAC ItemCollection of band GeoTIFFs (one item per date)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
from affine import Affine

from common.geo import Grid, transform_geometries, write_cog
from imagery.data.sen12landslides import S2_BANDS, Sen12Patch


def lonlat_box(grid: Grid, inset_m: float = 0.0) -> tuple[float, float, float, float]:
    """The lon/lat bounds of ``grid``'s extent shrunk by ``inset_m`` on each side."""
    left, bottom, right, top = grid.bounds
    box = shapely.box(left + inset_m, bottom + inset_m, right - inset_m, top - inset_m)
    return tuple(transform_geometries(shapely.segmentize(box, 10.0), grid.crs, "EPSG:4326").bounds)


def write_items(patch: Sen12Patch, folder: Path) -> tuple[Path, Path, Path]:
    """``(items.json, dem.tif, mask.tif)`` in ``folder``: every date's bands (int16 DN, scale 1e-4) and SCL."""
    folder.mkdir(parents=True, exist_ok=True)
    grid = patch.grid
    footprint = shapely.geometry.mapping(
        transform_geometries(shapely.segmentize(shapely.box(*grid.bounds), 10.0), grid.crs, "EPSG:4326")
    )
    features = []
    for t, day in enumerate(patch.dates):
        assets = {}
        for band in (*S2_BANDS, "SCL"):
            arr = patch.scl[t] if band == "SCL" else patch.bands[band][t]
            name = f"{day.isoformat()}_{band}.tif"
            write_cog(folder / name, arr.astype(np.uint8 if band == "SCL" else np.int16), grid, nodata=0)
            asset = {"href": name, "type": "image/tiff; application=geotiff"}
            if band != "SCL":
                asset["raster:bands"] = [{"scale": 1e-4, "offset": 0.0}]
            assets[band] = asset
        features.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": f"S2_{day:%Y%m%d}",
                "collection": "sentinel-2-l2a",
                "geometry": footprint,
                "bbox": list(shapely.geometry.shape(footprint).bounds),
                "properties": {"datetime": f"{day.isoformat()}T10:00:00Z", "eo:cloud_cover": 10.0},
                "assets": assets,
                "links": [],
            }
        )
    items = folder / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    write_cog(folder / "dem.tif", patch.dem, grid, nodata=np.nan)
    write_cog(folder / "mask.tif", patch.mask, grid, nodata=255)
    return items, folder / "dem.tif", folder / "mask.tif"


def shifted(grid: Grid, dx: float) -> Grid:
    """``grid`` moved ``dx`` metres east."""
    t = grid.transform
    return Grid(grid.crs, Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f), grid.width, grid.height)
