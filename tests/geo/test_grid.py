"""common.geo.grid: Grid construction and geometry, true pixel sizes, coverage, windows."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS as RioCRS
from rasterio.windows import Window

from common.cli import UserError
from common.geo import Grid, coverage_fraction, iter_windows, normalize_crs, pixel_size_m, tile_windows
from tests.conftest import shared_dataset
from tests.geo.helpers import geo_grid, utm_grid, write_tif


def test_crs_is_normalised_so_equal_grids_compare_equal() -> None:
    t = Affine(10, 0, 500_000, 0, -10, 2_750_000)
    a = Grid("EPSG:32629", t, 5, 4)
    b = Grid(RioCRS.from_epsg(32629), t, 5, 4)
    c = Grid(RioCRS.from_epsg(32629).to_wkt(), tuple(t), 5, 4)
    assert a == b == c and a.crs == "EPSG:32629" and isinstance(c.transform, Affine)
    assert normalize_crs(4326) == "EPSG:4326"
    with pytest.raises(UserError, match="not a valid CRS"):
        Grid("EPSG:999999", t, 5, 4)
    with pytest.raises(UserError, match="north-up"):
        Grid("EPSG:32629", Affine(10, 0.5, 0, 0, -10, 0), 5, 4)
    with pytest.raises(ValueError, match="width"):
        Grid("EPSG:32629", t, 0, 4)


def test_grid_round_trips_through_a_written_raster(tmp_path) -> None:
    grid = utm_grid(width=37, height=23, res=20.0)
    path = write_tif(tmp_path / "r.tif", np.zeros(grid.shape, np.uint8), grid, nodata=255)
    assert Grid.from_raster(path) == grid
    # to_profile writes a raster with the same grid too
    with rasterio.open(tmp_path / "p.tif", "w", **grid.to_profile("float32", np.nan)) as dst:
        dst.write(np.ones((1, *grid.shape), np.float32))
    assert Grid.from_raster(tmp_path / "p.tif") == grid


def test_geometry_properties() -> None:
    grid = utm_grid(width=30, height=20, res=10.0, x0=1000.0, y0=5000.0)
    assert grid.shape == (20, 30) and grid.res == (10.0, 10.0)
    assert tuple(grid.bounds) == (1000.0, 4800.0, 1300.0, 5000.0)
    assert not grid.is_geographic and geo_grid().is_geographic
    assert grid.window_transform(Window(3, 2, 5, 5)) == Affine(10, 0, 1030, 0, -10, 4980)
    sub = grid.subgrid(Window(3, 2, 5, 4))
    assert sub.shape == (4, 5) and sub.bounds.left == 1030 and sub.bounds.top == 4980
    x, y = grid.cell_centres([0, 19], [0, 29])
    assert np.allclose(x, [1005, 1295]) and np.allclose(y, [4995, 4805])
    xs, ys = grid.cell_centres()
    assert xs.shape == grid.shape and xs[0, 1] - xs[0, 0] == 10 and ys[1, 0] - ys[0, 0] == -10


def test_from_bounds_covers_the_bounds() -> None:
    grid = Grid.from_bounds((0, 0, 105, 50), "EPSG:32629", 10)
    assert grid.shape == (5, 11) and grid.bounds.right == 110 and grid.bounds.top == 50
    exact = Grid.from_bounds((0, 0, 100, 50), "EPSG:32629", (10, 5))
    assert exact.shape == (10, 10) and exact.res == (10, 5)
    with pytest.raises(UserError, match="bounds"):
        Grid.from_bounds((10, 0, 0, 5), "EPSG:32629", 1)


def test_bounds_in_another_crs_encloses_every_pixel() -> None:
    grid = utm_grid(width=200, height=200, res=100.0)
    ll = grid.bounds_in("EPSG:4326")
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    b = grid.bounds
    lon, lat = tr.transform([b.left, b.left, b.right, b.right], [b.bottom, b.top, b.bottom, b.top])
    assert ll.left <= min(lon) and ll.right >= max(lon) and ll.bottom <= min(lat) and ll.top >= max(lat)
    assert -9.5 < ll.left < -8.5 and 24.5 < ll.bottom < 25.0


def test_pixel_size_m_geographic_equator_vs_60n() -> None:
    equator = Grid("EPSG:4326", Affine(1.0, 0, 10, 0, -1.0, 0.5), 3, 1)  # one row centred on 0 N
    dy, dx = pixel_size_m(equator)
    assert dx.shape == (1,) and dy.shape == (1,)
    assert dx[0] == pytest.approx(111_319.5, rel=1e-4)  # equatorial degree of longitude
    assert dy[0] == pytest.approx(110_574.4, rel=1e-4)  # meridian degree at the equator
    north = Grid("EPSG:4326", Affine(1.0, 0, 10, 0, -1.0, 60.5), 3, 1)  # centred on 60 N
    dy60, dx60 = pixel_size_m(north)
    assert dx60[0] == pytest.approx(55_800, rel=2e-3)  # about half: cos(60) on the ellipsoid
    assert dx60[0] / dx[0] == pytest.approx(0.5, abs=0.005)
    assert dy60[0] == pytest.approx(111_412, rel=1e-3)
    # per row: pixel width shrinks northwards across a grid
    dy, dx = pixel_size_m(geo_grid(height=3, res=10.0, lat0=70.0))
    assert dx[0] < dx[1] < dx[2]


def test_pixel_size_m_projected_uses_crs_units_in_metres() -> None:
    dy, dx = pixel_size_m(utm_grid(height=4, res=20.0))
    assert np.all(dy == 20.0) and np.all(dx == 20.0) and dy.shape == (4,)
    feet = Grid("EPSG:2263", Affine(10, 0, 1e6, 0, -10, 2e5), 3, 2)  # NY Long Island, US survey feet
    dy, dx = pixel_size_m(feet)
    assert dx[0] == pytest.approx(3.048006, rel=1e-6)


def test_coverage_fraction() -> None:
    grid = utm_grid(width=100, height=100, res=10.0, x0=0.0, y0=1000.0)  # box (0, 0, 1000, 1000)
    assert coverage_fraction(grid, (0, 0, 1000, 1000), grid.crs) == pytest.approx(1.0)
    assert coverage_fraction(grid, (500, -100, 2000, 2000), grid.crs) == pytest.approx(0.5)
    assert coverage_fraction(grid, (2000, 0, 3000, 1000), grid.crs) == 0.0
    real = utm_grid(width=100, height=100, res=100.0)
    assert coverage_fraction(real, tuple(real.bounds_in("EPSG:4326")), "EPSG:4326") == pytest.approx(1.0)
    assert coverage_fraction(real, (6, 0, 7, 1), "EPSG:4326") == 0.0  # the DEM tile's box, far away
    # a global lon/lat raster covers any UTM scene (its box cannot be transformed into UTM whole)
    assert coverage_fraction(real, (-180, -90, 180, 90), "EPSG:4326") == pytest.approx(1.0)
    assert coverage_fraction(real, (-180, -90, -8.9505, 90), "EPSG:4326") == pytest.approx(0.5, abs=0.02)


def test_iter_windows_cover_the_grid_exactly_once() -> None:
    grid = utm_grid(width=23, height=17)
    for block_cols in (None, 5):
        seen = np.zeros(grid.shape, int)
        wins = list(iter_windows(grid, 4, block_cols))
        for w in wins:
            seen[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
        assert (seen == 1).all()
    assert len(list(iter_windows(grid, 4))) == 5 and list(iter_windows(grid, 4))[-1].height == 1
    with pytest.raises(ValueError):
        list(iter_windows(grid, 0))


def test_tile_windows_overlap_and_align_last_tile_to_far_edge() -> None:
    grid = utm_grid(width=300, height=260)
    tiles = tile_windows(grid, 128, 32)
    rows = sorted({w.row_off for w in tiles})
    cols = sorted({w.col_off for w in tiles})
    assert rows == [0, 96, 132] and cols == [0, 96, 172]  # stride 96; last tiles end at 260 / 300
    assert all(w.width == 128 and w.height == 128 for w in tiles)
    seen = np.zeros(grid.shape, int)
    for w in tiles:
        seen[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert seen.min() >= 1
    small = tile_windows(utm_grid(width=50, height=40), 128, 32)
    assert small == [Window(0, 0, 50, 40)]
    rect = tile_windows(grid, (100, 150), (0, 0))
    assert {(w.height, w.width) for w in rect} == {(100, 150)} and len(rect) == 3 * 2
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(grid, 64, 64)


def test_from_raster_errors_are_one_line_user_errors_naming_the_file(tmp_path) -> None:
    missing = tmp_path / "nope.tif"
    with pytest.raises(UserError, match="raster not found") as exc:
        Grid.from_raster(missing)
    assert str(missing) in str(exc.value) and "\n" not in str(exc.value)
    no_crs = write_tif(tmp_path / "nocrs.tif", np.zeros((4, 4), np.uint8), None)
    with pytest.raises(UserError, match="no CRS") as exc:
        Grid.from_raster(no_crs)
    assert str(no_crs) in str(exc.value)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a tiff")
    with pytest.raises(UserError, match="cannot read raster") as exc:
        Grid.from_raster(junk)
    assert str(junk) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.real_data
def test_real_sentinel2_grids_nest() -> None:
    data = shared_dataset("sentinel2_l2a_cogs_29RKH")
    g10, g20, g60 = (Grid.from_raster(data / f"{b}.tif") for b in ("B04", "B05", "B01"))
    assert g10.crs == g20.crs == g60.crs == "EPSG:32629"
    assert g10.shape == (1098, 1098) and g20.shape == (549, 549) and g60.shape == (183, 183)
    assert g10.bounds == g20.bounds == g60.bounds
    dem = Grid.from_raster(shared_dataset("copernicus_dem_cog") / "Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif")
    assert dem.is_geographic and coverage_fraction(g10, dem.bounds, dem.crs) == 0.0
    dy, dx = pixel_size_m(dem)
    assert 30.0 < dy.mean() < 31.5 and 30.0 < dx.mean() < 31.5  # 1 arc-second near the equator
