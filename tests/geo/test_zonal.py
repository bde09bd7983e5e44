"""common.geo.zonal: a region's cells counted on and off the grid; means and majority classes over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine

from common.geo import CLASSES_TAG, Grid, ZonalRaster, buffer_m, to_lonlat, write_cog, zonal_mean, zone_of

GRID = Grid("EPSG:32633", Affine(10.0, 0, 400000.0, 0, -10.0, 5180000.0), 20, 10)  # 200 m x 100 m


def test_window_of_is_not_clipped_and_clip_cuts_it() -> None:
    geom = shapely.box(400150.0, 5179950.0, 400450.0, 5180000.0)  # 30 px wide, 15 of them east of the grid
    win = GRID.window_of(geom, GRID.crs)
    assert (win.col_off, win.row_off, win.width, win.height) == (15, 0, 30, 5)
    clipped = GRID.clip(win)
    assert (clipped.col_off, clipped.width, clipped.height) == (15, 5, 5)
    assert GRID.clip(GRID.window_of(shapely.box(401000, 5179000, 401100, 5179100), GRID.crs)) is None
    lonlat = to_lonlat(geom, GRID.crs)  # the same box in degrees gives about the same window
    w2 = GRID.window_of(lonlat, "EPSG:4326")
    assert abs(w2.col_off - 15) <= 1 and abs(w2.width - 30) <= 2


def test_shares_are_of_the_whole_region() -> None:
    geom = shapely.box(400100.0, 5179950.0, 400300.0, 5180000.0)  # 20 x 5 px, the east half off the grid
    zone = zone_of(GRID, geom, GRID.crs)
    assert zone.cells == 100 and zone.inside.sum() == 50 and zone.on_grid == pytest.approx(0.5)
    values = np.ones((int(zone.window.height), int(zone.window.width)), np.float32)
    assert zone.share(np.isfinite(values)) == pytest.approx(0.5)
    assert zonal_mean(values, zone) == 1.0  # exactly half known: kept
    values[0, 0] = np.nan
    assert zonal_mean(values, zone) is None  # under half of the region known
    assert zone.pixel_area_m2(GRID) == pytest.approx(100.0)


def test_zonal_raster_majority_names_the_class(tmp_path: Path) -> None:
    codes = np.zeros(GRID.shape, np.uint8)
    codes[:, 12:] = 1
    path = write_cog(
        tmp_path / "lith.tif", codes, GRID, 255, tags={CLASSES_TAG: json.dumps({"0": "shale", "1": "granite"})}
    )
    mostly_granite = zone_of(GRID, shapely.box(400100.0, 5179900.0, 400200.0, 5180000.0), GRID.crs)
    with ZonalRaster(path, GRID, categorical=True) as r:
        assert r.value(mostly_granite) == "granite"
        off = zone_of(GRID, shapely.box(400150.0, 5179900.0, 400550.0, 5180000.0), GRID.crs)  # 3/8 on the grid
        assert r.value(off) is None


def test_buffer_m_is_metres_on_the_ground() -> None:
    box = shapely.box(13.0, 46.0, 13.01, 46.01)
    grown = buffer_m(box, "EPSG:4326", 1000.0)
    w, s, e, n = grown.bounds
    assert (46.0 - s) * 111_150 == pytest.approx(1000.0, rel=0.01)
    assert (13.0 - w) * 111_320 * np.cos(np.radians(46.0)) == pytest.approx(1000.0, rel=0.01)
    with pytest.raises(ValueError, match="expected a finite distance"):
        buffer_m(box, "EPSG:4326", float("inf"))


def test_a_region_whose_window_overlaps_but_no_cell_is_on_the_grid_is_off_the_grid() -> None:
    tri = shapely.Polygon([(400250.0, 5180050.0), (400190.0, 5180150.0), (400300.0, 5180150.0)])  # north of it
    zone = zone_of(GRID, tri, GRID.crs)
    assert zone.window is None and zone.cells > 0 and zone.on_grid == 0.0
    diagonal = shapely.Polygon([(400195.0, 5180100.0), (400300.0, 5180100.0), (400300.0, 5179905.0)])
    zone = zone_of(GRID, diagonal, GRID.crs)  # its window reaches the grid's corner, its cells do not
    assert zone.window is None
