"""Write a Sen12Landslides patch as a local STAC ItemCollection of band GeoTIFFs (one item per date)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
from affine import Affine

from common.geo import Grid, transform_geometries, write_cog
from common.geo.grid import Window
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


# -- a small synthetic event world --------------------------------------------------------------------
#: Where things are on the synthetic grid (row slice, col slice).
FIELD = (slice(40, 60), slice(8, 28))  # harvested field on flat ground
QUARRY = (slice(8, 24), slice(60, 76))  # bare before and after, on the slope
SLIDE = (slice(50, 70), slice(58, 74))  # vegetated before, bare after, on the slope
CLOUD = (slice(48, 60), slice(56, 80))  # a cloud over part of the landslide on the first post date
MEADOW = (slice(78, 94), slice(52, 92))  # sparse before, green after on the slope: seasonal greening, not a change
SYN_GRID = Grid("EPSG:32632", Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), 96, 96)
VEG = {"B2": 0.03, "B3": 0.06, "B4": 0.03, "B8": 0.35, "B11": 0.15}
BARE = {"B2": 0.12, "B3": 0.15, "B4": 0.18, "B8": 0.24, "B11": 0.32}
SPARSE = {"B2": 0.05, "B3": 0.08, "B4": 0.08, "B8": 0.20, "B11": 0.20}  # meadow before the growing season (NDVI 0.43)
GREEN = {"B2": 0.03, "B3": 0.07, "B4": 0.04, "B8": 0.32, "B11": 0.16}  # the same meadow after (NDVI 0.78)


def synthetic_dem(grid: Grid = SYN_GRID) -> np.ndarray:
    """Flat (100 m) west of column 48, a 30-degree slope rising east of it."""
    cols = np.arange(grid.width, dtype=np.float32)
    z = 100.0 + np.tan(np.radians(30.0)) * np.clip(cols - 48, 0, None) * 10.0
    return np.broadcast_to(z, grid.shape).astype(np.float32)


def write_synthetic_items(
    folder: Path,
    *,
    pre_dates: tuple[str, ...] = ("2023-04-20", "2023-05-05"),
    post_dates: tuple[str, ...] = ("2023-05-25", "2023-06-09"),
    with_dates: bool = True,
) -> tuple[Path, Path]:
    """``(items.json, dem.tif)`` of the synthetic world (event 2023-05-16)."""
    folder.mkdir(parents=True, exist_ok=True)
    grid = SYN_GRID
    footprint = transform_geometries(shapely.box(*grid.bounds), grid.crs, "EPSG:4326")
    features = []
    for k, day in enumerate((*pre_dates, *post_dates)):
        post = day in post_dates
        assets = {}
        scl = np.full(grid.shape, 4, np.uint8)
        if post and day == post_dates[0]:
            scl[CLOUD] = 9
        for band, veg in VEG.items():
            arr = np.full(grid.shape, veg * (1.05 if post and band == "B8" else 1.0), np.float32)  # seasonal greening
            arr[QUARRY] = BARE[band]
            arr[MEADOW] = (GREEN if post else SPARSE)[band]
            if post:
                arr[FIELD] = BARE[band]
                arr[SLIDE] = BARE[band]
            arr[scl == 9] = 0.5
            name = f"{day}_{band}.tif"
            write_cog(folder / name, np.round(arr * 1e4).astype(np.int16), grid, nodata=0)
            assets[band] = {"href": name, "raster:bands": [{"scale": 1e-4, "offset": 0.0}]}
        write_cog(folder / f"{day}_SCL.tif", scl, grid, nodata=0)
        assets["SCL"] = {"href": f"{day}_SCL.tif"}
        props = {"datetime": f"{day}T10:00:00Z", "eo:cloud_cover": 20.0} if with_dates else {}
        props["synthetic"] = True  # a synthetic-data model on it draws no "real scene" warning
        features.append(
            {
                "type": "Feature",
                "id": f"SYN_{k}",
                "geometry": shapely.geometry.mapping(footprint),
                "bbox": list(footprint.bounds),
                "properties": props,
                "assets": assets,
            }
        )
    items = folder / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    write_cog(folder / "dem.tif", synthetic_dem(grid), grid, nodata=np.nan)
    return items, folder / "dem.tif"


def split_into_two_zones(items_json: Path, folder: Path, *, border_col: int = 66, overlap: int = 6) -> Path:
    """The synthetic items re-cut as two tiles per date: the west one (columns ``< border_col``) on the world's
    UTM 32N grid, the east one (from ``border_col - overlap``) warped into UTM zone 33N, as two MGRS tiles of
    neighbouring zones are. Returns the new items JSON."""
    from common.geo import reproject_to_cog

    folder.mkdir(parents=True, exist_ok=True)
    data = json.loads(items_json.read_text(encoding="utf-8"))
    g = SYN_GRID
    west = g.subgrid(Window(0, 0, border_col, g.height))
    east_utm32 = g.subgrid(Window(border_col - overlap, 0, g.width - border_col + overlap, g.height))
    east = east_utm32.to_crs("EPSG:32633", resolution=10.0)
    features = []
    for item in data["features"]:
        for tile, grid in (("W", west), ("E", east)):
            assets = {}
            for band, asset in item["assets"].items():
                src = items_json.parent / asset["href"]
                name = f"{tile}_{asset['href']}"
                reproject_to_cog(src, folder / name, grid, "nearest" if band == "SCL" else "bilinear")
                assets[band] = {**asset, "href": name}
            fp = transform_geometries(shapely.box(*grid.bounds), grid.crs, "EPSG:4326")
            features.append(
                {
                    **item,
                    "id": f"{item['id']}_{tile}",
                    "geometry": shapely.geometry.mapping(fp),
                    "bbox": list(fp.bounds),
                    "assets": assets,
                }
            )
    out = folder / "items.json"
    out.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return out


#: The synthetic world's event date (``write_synthetic_items``: pre dates in March-May, post dates after).
SYN_EVENT = "2023-05-16"


def map_event_argv(items: Path, dem: Path, out: Path, *extra: str, block: int = 32) -> list[str]:
    """``pipelines.map_event``'s arguments over the synthetic world (its box minus a 60 m rim), ``block`` px blocks."""
    bbox = lonlat_box(SYN_GRID, inset_m=60.0)
    return ["--bbox", *map(str, bbox), "--event-date", SYN_EVENT, "--items", str(items), "--dem", str(dem),
            "--out", str(out), "--block", str(block), *extra]  # fmt: skip
