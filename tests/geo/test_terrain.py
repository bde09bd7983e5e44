"""common.geo.terrain: terrain factors with true metres per pixel, block-wise equality, D8 and TWI."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

from common.geo import (
    Grid,
    RasterOnGrid,
    aspect,
    flow_accumulation,
    iter_windows,
    pixel_size_m,
    plan_curvature,
    profile_curvature,
    roughness,
    slope,
    terrain_window,
    tpi,
    tri,
    twi,
    write_cog,
)
from tests.conftest import shared_dataset
from tests.geo.helpers import geo_grid

TAN30 = np.tan(np.radians(30.0))


def _plane(rows: int, cols: int, d: float, uphill_az_deg: float, tan_slope: float) -> np.ndarray:
    """A plane rising towards azimuth ``uphill_az_deg`` (clockwise from north) with gradient ``tan_slope``."""
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float64)
    east, north = c * d, -r * d
    az = np.radians(uphill_az_deg)
    return tan_slope * (east * np.sin(az) + north * np.cos(az))


def test_slope_and_aspect_of_a_plane_are_exact_in_metres() -> None:
    dem = _plane(30, 40, 10.0, uphill_az_deg=40.0, tan_slope=TAN30)
    s = slope(dem, 10.0, 10.0)
    assert s.dtype == np.float32 and s.shape == dem.shape
    np.testing.assert_allclose(s[1:-1, 1:-1], 30.0, atol=1e-4)
    assert 10.0 < s[0, 5] < 25.0  # border: edge replication halves the gradient across the edge
    sin, cos = aspect(dem, 10.0, 10.0)
    facing = np.degrees(np.arctan2(sin[1:-1, 1:-1], cos[1:-1, 1:-1])) % 360
    np.testing.assert_allclose(facing, 220.0, atol=1e-3)  # downslope = uphill + 180
    # a south-facing plane is (0, -1); flat is (0, 0) and slope 0
    sin, cos = aspect(_plane(5, 5, 10.0, 0.0, 0.5), 10.0, 10.0)
    assert sin[2, 2] == pytest.approx(0.0, abs=1e-9) and cos[2, 2] == pytest.approx(-1.0)
    sin, cos = aspect(np.zeros((5, 5)), 10.0, 10.0)
    assert (sin == 0).all() and (cos == 0).all() and (slope(np.zeros((5, 5)), 1.0, 1.0) == 0).all()


def test_rectangular_pixels_use_dy_and_dx() -> None:
    # 1 m rise per row with 20 m rows and 5 m columns: slope atan(1/20) whatever dx is
    dem = np.repeat(np.arange(10.0)[::-1, None], 8, axis=1)
    assert slope(dem, 20.0, 5.0)[5, 4] == pytest.approx(np.degrees(np.arctan(1 / 20)), abs=1e-4)
    per_row = slope(dem, np.full(10, 20.0), np.linspace(1, 50, 10))
    assert per_row[5, 4] == pytest.approx(np.degrees(np.arctan(1 / 20)), abs=1e-4)
    with pytest.raises(ValueError, match="one per row"):
        slope(dem, np.ones(3), 1.0)


def test_plane_in_epsg4326_gives_the_same_slope_as_in_utm(tmp_path) -> None:
    # a 30-degree plane on a UTM 32N grid at 60 N (30 m pixels), reprojected to EPSG:4326 square-degree
    # pixels of 0.0002 degrees: about 11 m wide and 22 m high there, so dx and dy differ twofold
    utm = Grid("EPSG:32632", Affine(30.0, 0, 470_000.0, 0, -30.0, 6_660_000.0), 160, 160)
    dem = _plane(160, 160, 30.0, uphill_az_deg=40.0, tan_slope=TAN30)
    write_cog(tmp_path / "plane_utm.tif", dem.astype(np.float32), utm, np.nan)
    geo = utm.to_crs("EPSG:4326", resolution=0.0002)
    dy, dx = pixel_size_m(geo)
    assert 1.9 < dy.mean() / dx.mean() < 2.1
    with RasterOnGrid(tmp_path / "plane_utm.tif", geo, "bilinear", bands=1) as r:
        dem_geo = r.read()
    s = slope(dem_geo, dy, dx)
    inner = s[inner_mask(dem_geo)]  # away from the warped edges
    assert inner.size > 0.5 * s.size
    np.testing.assert_allclose(inner, 30.0, atol=0.5)
    assert abs(float(np.median(inner)) - 30.0) < 0.05  # what is left is UTM's 0.9996 scale factor
    # the same pixels taken as square (dx = dy) would be badly wrong
    assert abs(float(np.nanmedian(slope(dem_geo, dy, dy)[inner_mask(dem_geo)])) - 30.0) > 3.0


def inner_mask(dem: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(np.isfinite(dem), iterations=3)


def test_curvature_signs_and_values() -> None:
    d = 10.0
    r, c = np.mgrid[0:41, 0:41].astype(np.float64)
    x, y = (c - 20) * d, (20 - r) * d
    dist = np.hypot(x, y)
    cone, bowl = -dist, dist
    # plan curvature: +1/r on a cone's flank (divergent), -1/r in a bowl (convergent)
    assert plan_curvature(cone, d, d)[10, 20] == pytest.approx(1 / 100.0, rel=0.05)
    assert plan_curvature(bowl, d, d)[10, 20] == pytest.approx(-1 / 100.0, rel=0.05)
    # profile curvature of a convex cylinder z = -x^2 / 200 (steepening downhill) is exactly +0.01 1/m
    convex = -(x**2) / 200.0
    assert profile_curvature(convex, d, d)[20, 30] == pytest.approx(0.01, rel=1e-9)
    assert profile_curvature(-convex, d, d)[20, 30] == pytest.approx(-0.01, rel=1e-9)
    plane = _plane(41, 41, d, 70.0, 0.3)
    assert np.abs(plan_curvature(plane, d, d)[1:-1, 1:-1]).max() < 1e-12
    assert np.abs(profile_curvature(plane, d, d)[1:-1, 1:-1]).max() < 1e-12


def test_tpi_tri_roughness_on_known_shapes() -> None:
    step = 2.0
    ramp = np.tile(np.arange(12.0) * step, (9, 1))  # rises by `step` per column
    assert np.abs(tpi(ramp)[1:-1, 1:-1]).max() < 1e-12 and np.abs(tpi(ramp, radius=2)[2:-2, 2:-2]).max() < 1e-12
    np.testing.assert_allclose(tri(ramp)[1:-1, 1:-1], np.sqrt(6) * step)  # Riley: 6 neighbours differ by step
    np.testing.assert_allclose(roughness(ramp)[1:-1, 1:-1], 2 * step)
    peak = np.zeros((7, 7))
    peak[3, 3] = 8.0
    t = tpi(peak)
    assert t[3, 3] == pytest.approx(8.0) and t[3, 2] == pytest.approx(-1.0)
    assert tpi(-peak)[3, 3] == pytest.approx(-8.0)
    assert tpi(peak, radius=2)[3, 3] == pytest.approx(8.0) and tpi(peak, radius=3)[0, 0] == pytest.approx(-8 / 48)
    with pytest.raises(ValueError, match="radius"):
        tpi(peak, radius=0)


def test_nan_propagates_to_the_neighbourhood_only() -> None:
    dem = _plane(12, 12, 10.0, 10.0, 0.2)
    dem[5, 6] = np.nan
    for out in (slope(dem, 10, 10), tri(dem), roughness(dem), plan_curvature(dem, 10, 10), aspect(dem, 10, 10)[0]):
        nan = np.isnan(out)
        assert nan[4:7, 5:8].all() and nan.sum() == 9
    assert np.isnan(tpi(dem, radius=2)).sum() == 25


def test_d8_flow_accumulation_on_a_tilted_plane_and_a_bowl() -> None:
    d = 10.0
    plane = _plane(20, 15, d, uphill_az_deg=0.0, tan_slope=TAN30)  # rises northwards: flow goes south
    acc = flow_accumulation(plane, d, d)
    assert acc.dtype == np.float64
    np.testing.assert_allclose(acc, np.arange(1, 21)[:, None] * d * d * np.ones((1, 15)))
    r, c = np.mgrid[0:31, 0:31]
    bowl = np.hypot(r - 15.0, c - 17.0)  # a pit at (15, 17): everything drains there
    acc = flow_accumulation(bowl, d, d)
    assert acc[15, 17] == pytest.approx(31 * 31 * d * d) and acc.max() == acc[15, 17]
    # geographic pixels: the pit collects the sum of the true pixel areas
    grid = geo_grid(width=31, height=31, res=1e-3, lat0=60.0)
    dy, dx = pixel_size_m(grid)
    acc = flow_accumulation(bowl, dy, dx)
    assert acc[15, 17] == pytest.approx(float((dy * dx).sum() * 31), rel=1e-12)
    # NaN pixels neither drain nor receive
    holed = bowl.copy()
    holed[15, 10] = np.nan
    acc = flow_accumulation(holed, d, d)
    assert np.isnan(acc[15, 10]) and acc[15, 17] < 31 * 31 * d * d


def test_twi_exact_on_a_tilted_plane() -> None:
    d = 10.0
    plane = _plane(20, 15, d, uphill_az_deg=0.0, tan_slope=TAN30)
    t = twi(plane, d, d)
    rows = np.arange(1, 19)  # interior rows: Horn slope exact there; a = (i + 1) * d
    expected = np.log((rows + 1) * d / TAN30)
    np.testing.assert_allclose(t[1:-1, 5], expected, rtol=1e-5)


def test_twi_on_a_cone_follows_the_divergent_catchment() -> None:
    d = 10.0
    r, c = np.mgrid[0:61, 0:61]
    dist = np.hypot((r - 30) * d, (c - 30) * d)
    cone = -dist * np.tan(np.radians(20))  # a peak: the true specific catchment area is r / 2
    sca = flow_accumulation(cone, d, d) / d
    t = twi(cone, d, d)
    ring_means = []
    for lo, hi in ((3, 6), (6, 10), (10, 15), (15, 20), (20, 25)):
        ring = (dist >= lo * d) & (dist < hi * d)
        assert np.median(sca[ring]) == pytest.approx((lo + hi) / 2 * d / 2, rel=0.15)
        ring_means.append(t[ring].mean())
    assert np.all(np.diff(ring_means) > 0)  # wetter downslope as the catchment grows


def test_twi_is_higher_in_a_valley_than_on_a_ridge() -> None:
    d = 10.0
    r, c = np.mgrid[0:61, 0:61].astype(np.float64)
    dem = 20 * np.cos(2 * np.pi * c / 40) + 0.02 * d * (61 - r)  # valley at column 20, ridge at column 40
    t = twi(dem, d, d)
    assert t[20:40, 20].mean() > t[20:40, 40].mean() + 4
    assert tpi(dem)[30, 20] < 0 < tpi(dem)[30, 40]
    assert plan_curvature(dem, d, d)[30, 20] < 0 < plan_curvature(dem, d, d)[30, 40]


def _blockwise(func, source, grid: Grid, block: tuple[int, int], **kw):
    spacing = pixel_size_m(grid)
    first = terrain_window(func, source, grid, Window(0, 0, 1, 1), spacing=spacing, **kw)
    n = len(first) if isinstance(first, tuple) else 1
    outs = [np.full(grid.shape, -999.0, np.float32) for _ in range(n)]
    for w in iter_windows(grid, *block):
        res = terrain_window(func, source, grid, w, spacing=spacing, **kw)
        for o, v in zip(outs, res if isinstance(res, tuple) else (res,), strict=True):
            o[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = v
    return tuple(outs) if n > 1 else outs[0]


@pytest.mark.parametrize(
    ("func", "kw"),
    [
        (slope, {}),
        (aspect, {}),
        (plan_curvature, {}),
        (profile_curvature, {}),
        (tpi, {"radius": 2}),
        (tri, {}),
        (roughness, {}),
    ],
)
def test_windowed_terrain_equals_whole_array(func, kw) -> None:
    grid = geo_grid(width=53, height=40, res=3e-4, lat0=60.0)  # per-row pixel widths matter here
    rng = np.random.default_rng(1)
    dem = np.cumsum(np.cumsum(rng.normal(size=grid.shape), 0), 1) + 500.0
    dem[17, 22] = np.nan
    dy, dx = pixel_size_m(grid)
    whole = func(dem, dy, dx, **kw) if func not in (tpi, tri, roughness) else func(dem, **kw)
    blocks = _blockwise(func, dem, grid, (7, 11), **kw)
    for w, b in zip(
        whole if isinstance(whole, tuple) else (whole,), blocks if isinstance(blocks, tuple) else (blocks,), strict=True
    ):
        assert np.isnan(w).sum() > 0
        np.testing.assert_allclose(b, w, rtol=1e-6, atol=1e-9)  # bit-identical on x86-64 NumPy here


def test_terrain_window_rules() -> None:
    grid = geo_grid(width=10, height=10)
    dem = np.zeros(grid.shape)
    for func in (twi, flow_accumulation):
        with pytest.raises(ValueError, match="whole DEM"):
            terrain_window(func, dem, grid, Window(0, 0, 5, 5))
    with pytest.raises(ValueError, match="halo of at least 3"):
        terrain_window(tpi, dem, grid, Window(0, 0, 5, 5), radius=3, halo=1)
    with pytest.raises(ValueError, match="outside"):
        terrain_window(slope, dem, grid, Window(8, 0, 5, 5))
    with pytest.raises(ValueError, match="bands=1"):  # a reader returning (bands, rows, cols)
        terrain_window(slope, lambda w: np.zeros((1, int(w.height), int(w.width))), grid, Window(0, 0, 5, 5))


@pytest.mark.real_data
def test_real_dem_slope_in_4326_matches_slope_after_reprojection_to_utm(tmp_path) -> None:
    path = shared_dataset("copernicus_dem_cog") / "Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"
    full = Grid.from_raster(path)
    # a 0.1 x 0.1 degree block on Sao Tome's steep volcanic slopes (about 11 x 11 km)
    window = Window(1760, 2440, 360, 360)
    geo = full.subgrid(window)
    with RasterOnGrid(path, geo, "nearest", bands=1) as r:  # same grid: nearest = the stored values
        dem_geo = r.read()
        # block-wise with a reader equals the whole-array computation
        blocks = np.vstack([terrain_window(slope, r.read, geo, w) for w in iter_windows(geo, 100)])
    assert np.nanmax(dem_geo) > 1000  # the island's mountains are in this block
    dy, dx = pixel_size_m(geo)
    s_geo = slope(dem_geo, dy, dx)
    np.testing.assert_allclose(blocks, s_geo, rtol=1e-6, atol=1e-9)
    utm = geo.to_crs("EPSG:32632", resolution=30.0)  # Sao Tome is in UTM zone 32N
    with RasterOnGrid(path, utm, "bilinear", bands=1) as r:
        dem_utm = r.read()
    s_utm = slope(dem_utm, *pixel_size_m(utm))
    land_geo = s_geo[2:-2, 2:-2][dem_geo[2:-2, 2:-2] > 50]
    land_utm = s_utm[2:-2, 2:-2][dem_utm[2:-2, 2:-2] > 50]
    assert np.median(land_geo) > 10  # steep terrain, so a degrees-vs-metres mistake would show
    assert abs(float(np.median(land_geo)) - float(np.median(land_utm))) < 1.0
    assert abs(float(np.percentile(land_geo, 90)) - float(np.percentile(land_utm, 90))) < 1.5
