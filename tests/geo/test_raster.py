"""common.geo.raster: reading onto a grid (WarpedVRT), read_raster, streaming COG writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from common.cli import UserError
from common.geo import (
    CogWriter,
    Grid,
    RasterOnGrid,
    iter_windows,
    read_raster,
    reproject_to_cog,
    tile_windows,
    write_cog,
)
from tests.conftest import shared_dataset
from tests.geo.helpers import UTM29, smooth_field, utm_grid, write_tif


def _assert_same_georef(path, grid: Grid, nodata) -> None:
    with rasterio.open(path) as ds:
        assert ds.crs is not None and Grid(ds.crs, ds.transform, ds.width, ds.height) == grid
        assert ds.nodata is not None
        if np.isnan(nodata):
            assert np.isnan(ds.nodata)
        else:
            assert ds.nodata == nodata


def _assemble(reader: RasterOnGrid, windows) -> np.ndarray:
    out = np.full(reader.grid.shape, -1.0, dtype=np.float32)
    for w in windows:
        out[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = reader.read(w)
    return out


# -- reading --------------------------------------------------------------------------------------
def test_read_on_own_grid_is_float32_with_nodata_as_nan(tmp_path) -> None:
    grid = utm_grid(width=20, height=10)
    data = np.arange(200, dtype=np.uint16).reshape(10, 20)
    data[2, 3] = 0
    path = write_tif(tmp_path / "u16.tif", data, grid, nodata=0)
    with RasterOnGrid(path, grid, resampling="nearest", bands=1) as r:
        arr = r.read()
        assert r.src_nodata == 0 and r.src_dtype == "uint16" and r.src_grid == grid
    assert arr.dtype == np.float32 and arr.shape == (10, 20)
    assert np.isnan(arr[2, 3]) and np.isnan(arr).sum() == 2  # the pixel set to 0 and pixel (0, 0) = 0
    ok = data != 0
    assert np.array_equal(arr[ok], data[ok].astype(np.float32))
    rd = read_raster(path)
    assert rd.array.dtype == np.uint16 and rd.nodata == 0 and rd.grid == grid and np.array_equal(rd.array, data)


def test_outside_the_source_is_nan_even_without_nodata(tmp_path) -> None:
    src_grid = utm_grid(width=10, height=10, res=10.0, x0=0.0, y0=100.0)
    path = write_tif(tmp_path / "f.tif", np.ones((10, 10), np.float32), src_grid, nodata=None)
    bigger = utm_grid(width=20, height=10, res=10.0, x0=0.0, y0=100.0)  # twice as wide
    with RasterOnGrid(path, bigger, bands=1) as r:
        arr = r.read()
    assert np.all(arr[:, :10] == 1) and np.isnan(arr[:, 10:]).all()


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic", "average"])
def test_a_raster_on_the_grid_s_pixels_reads_directly_with_the_warper_s_values(tmp_path, resampling: str) -> None:
    """Same CRS and pixel size, origin whole pixels away (the grid itself, a block of it, a grid reaching past
    the file): read without the warper, the same values as through it, nodata and outside NaN."""
    src = utm_grid(width=70, height=50, res=10.0, x0=500_000.0, y0=2_750_000.0)
    rng = np.random.default_rng(0)
    data = rng.integers(1, 10_000, size=(2, 50, 70)).astype(np.uint16)
    data[:, 7, 9] = 0
    path = write_tif(tmp_path / "b.tif", data, src, nodata=0)
    grids = [src, utm_grid(width=30, height=20, x0=500_000.0 + 40 * 10, y0=2_750_000.0 - 30 * 10)]
    grids.append(utm_grid(width=90, height=40, x0=500_000.0 - 10 * 10, y0=2_750_000.0 - 20 * 10))  # past 3 edges
    for grid in grids:
        with (
            RasterOnGrid(path, grid, resampling, bands=[2, 1]) as direct,
            RasterOnGrid(path, grid, resampling, bands=[2, 1], direct=False) as warped,
        ):
            assert direct._blocks is not None and warped._blocks is None
            for win in [None, Window(3, 2, 17, 11), Window(grid.width - 5, grid.height - 4, 5, 4)]:
                np.testing.assert_array_equal(direct.read(win), warped.read(win))
    shifted = utm_grid(width=30, height=20, x0=500_000.0 + 5.0)  # half a pixel off: warped
    half = utm_grid(width=30, height=20, res=20.0)  # another pixel size: warped
    for grid in (shifted, half):
        with RasterOnGrid(path, grid, resampling, bands=1) as r:
            assert r._blocks is None


@pytest.mark.parametrize("factors", [(2, 2), (6, 6), (2, 3)])
@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_a_coarser_raster_on_whole_blocks_of_the_grid_upsamples_with_the_warper_s_values(
    tmp_path, resampling: str, factors: tuple[int, int]
) -> None:
    """A raster whose pixels are fx x fy blocks of the grid's (a 20 m or 60 m band on a 10 m grid), its origin
    whole grid pixels away: read at its own resolution and upsampled here, with the warper's values (nearest:
    equal; bilinear: equal at factor 2, else within 1e-3 of a DN; NaN where the warper gives NaN: next to nodata,
    outside the file)."""
    fx, fy = factors
    src = Grid(UTM29, Affine(10.0 * fx, 0, 500_030.0, 0, -10.0 * fy, 2_750_020.0), 23, 17)
    rng = np.random.default_rng(1)
    data = rng.integers(1, 10_000, size=(2, 17, 23)).astype(np.uint16)
    data[:, 5:7, 8] = 0
    data[:, 0, 3] = data[:, 16, 22] = 0  # nodata on the file's edges
    path = write_tif(tmp_path / "c.tif", data, src, nodata=0)
    whole = utm_grid(width=23 * fx + 9, height=17 * fy + 7, x0=500_000.0, y0=2_750_050.0)  # past all 4 edges
    inner = utm_grid(width=40, height=30, x0=500_000.0 + 20 * 10, y0=2_750_050.0 - 11 * 10)
    for grid in (whole, inner):
        with (
            RasterOnGrid(path, grid, resampling, bands=[2, 1]) as mine,
            RasterOnGrid(path, grid, resampling, bands=[2, 1], direct=False) as warped,
        ):
            assert mine._blocks is not None and mine._blocks[:2] == (fx, fy) and mine._vrt is None
            for win in [
                None,
                Window(3, 2, 17, 11),
                Window(grid.width - 5, grid.height - 4, 5, 4),
                Window(0, 7, grid.width, 1),
            ]:
                got, want = mine.read(win), warped.read(win)
                np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
                if resampling == "nearest" or factors == (2, 2):
                    np.testing.assert_array_equal(got, want)
                else:
                    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-3)  # OpenCV's float32 weights
            if grid is whole:
                assert np.isnan(want).any() and np.isfinite(want).any()
    with RasterOnGrid(path, whole, "cubic", bands=1) as r:  # a kernel this module does not evaluate: warped
        assert r._blocks is None and r._vrt is not None


def test_prewarp_warps_the_whole_grid_once_with_the_warper_s_values(tmp_path) -> None:
    """A raster in another CRS read with prewarp=True: the same values as the exact warper within the
    prewarp's 1/1000 px positions, windows equal to the whole read bit for bit, the temporary copy removed."""
    src = utm_grid(width=300, height=300, res=30.0)
    field = smooth_field(src)
    field[40:44, 100:104] = -9999.0
    path = write_tif(tmp_path / "dem.tif", field, src, nodata=-9999.0)
    target = src.to_crs("EPSG:4326")
    with (
        RasterOnGrid(path, target, "bilinear", bands=1) as exact,
        RasterOnGrid(path, target, "bilinear", bands=1, prewarp=True) as pre,
    ):
        assert pre._vrt is None and pre._blocks == (1, 1, 0, 0)
        copy = pre._src.name
        want, got = exact.read(), pre.read()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert np.isnan(got).any() and np.isfinite(got).mean() > 0.9
        # field gradients are <= ~7 per 30 m pixel: 1/1000 px moves a value by well under 0.05
        assert float(np.nanmax(np.abs(got - want))) < 0.05
        np.testing.assert_array_equal(_assemble(pre, tile_windows(target, 64, 8)), got)
    assert not Path(copy).exists()


def test_a_raster_with_an_internal_mask_is_warped(tmp_path) -> None:
    grid = utm_grid(width=20, height=10)
    path = write_tif(tmp_path / "m.tif", np.ones((10, 20), np.uint8), grid)
    with rasterio.open(path, "r+") as ds:
        mask = np.full((10, 20), 255, np.uint8)
        mask[:, :5] = 0
        ds.write_mask(mask)
    with RasterOnGrid(path, grid, "nearest", bands=1) as r:
        arr = r.read()
        assert r._blocks is None
    assert np.isnan(arr[:, :5]).all() and (arr[:, 5:] == 1).all()


def test_band_selection_and_order(tmp_path) -> None:
    grid = utm_grid(width=8, height=6)
    stack = np.stack([np.full(grid.shape, v, np.int16) for v in (10, 20, 30)])
    path = write_tif(tmp_path / "stack.tif", stack, grid, nodata=-1)
    with RasterOnGrid(path, grid, "nearest") as r:
        assert r.read().shape == (3, 6, 8) and r.count == 3
    with RasterOnGrid(path, grid, "nearest", bands=[3, 1]) as r:
        a = r.read(Window(2, 1, 4, 3))
        assert a.shape == (2, 3, 4) and a[0, 0, 0] == 30 and a[1, 0, 0] == 10
    with RasterOnGrid(path, grid, "nearest", bands=2) as r:
        assert r.read().shape == (6, 8) and np.all(r.read() == 20)
    with pytest.raises(UserError, match="bands 1..3"), RasterOnGrid(path, grid, bands=4):
        pass
    with RasterOnGrid(path, grid, bands=1) as r, pytest.raises(ValueError, match="outside"):
        r.read(Window(5, 0, 4, 2))


def test_resampling_nearest_keeps_classes_bilinear_interpolates(tmp_path) -> None:
    coarse = utm_grid(width=10, height=10, res=20.0)
    classes = (np.arange(100).reshape(10, 10) % 4 + 1).astype(np.uint8)
    path = write_tif(tmp_path / "cls.tif", classes, coarse, nodata=0)
    fine = utm_grid(width=20, height=20, res=10.0)
    with RasterOnGrid(path, fine, "nearest", bands=1) as r:
        nn = r.read()
    assert set(np.unique(nn)) == {1.0, 2.0, 3.0, 4.0}
    assert np.array_equal(nn[::2, ::2], classes.astype(np.float32))
    with RasterOnGrid(path, fine, "bilinear", bands=1) as r:
        bl = r.read()
    assert len(np.unique(bl[~np.isnan(bl)])) > 4  # interpolated values between classes


def test_cross_crs_windowed_reads_equal_a_whole_read(tmp_path) -> None:
    # 100 km across with pixel-scale noise: big enough that GDAL's 1/8-pixel transform approximation or
    # a per-chunk resampling kernel scale would change values between windowed and whole reads
    src = utm_grid(width=500, height=500, res=200.0)
    noisy = smooth_field(src) + np.random.default_rng(0).normal(0, 20, src.shape).astype(np.float32)
    path = write_tif(tmp_path / "f.tif", noisy, src, nodata=-9999.0)
    target = src.to_crs("EPSG:4326")
    with RasterOnGrid(path, target, "bilinear", bands=1) as r:
        whole = r.read()
        tiled = _assemble(r, tile_windows(target, 64, 8))
        strips = _assemble(r, iter_windows(target, 97))
    assert np.isfinite(whole).mean() > 0.9
    np.testing.assert_array_equal(tiled, whole)
    np.testing.assert_array_equal(strips, whole)


def test_utm_to_4326_and_back_keeps_values(tmp_path) -> None:
    src = utm_grid(width=150, height=120, res=30.0)
    field = smooth_field(src)
    path = write_tif(tmp_path / "utm.tif", field, src, nodata=-9999.0)
    geo = src.to_crs("EPSG:4326")
    assert geo.is_geographic
    reproject_to_cog(path, tmp_path / "geo.tif", geo, "bilinear", block=64)
    with RasterOnGrid(tmp_path / "geo.tif", src, "bilinear", bands=1) as r:
        back = r.read()
    inner = (slice(5, -5), slice(5, -5))
    diff = np.abs(back[inner] - field[inner])
    assert np.isfinite(back[inner]).all()
    assert np.nanmax(diff) < 3.0 and np.nanmean(diff) < 0.5  # field spans ~100..300, gradients <= 7 per pixel


def test_raster_not_covering_the_grid_is_a_user_error(tmp_path) -> None:
    src = utm_grid(width=10, height=10, x0=0.0, y0=100.0)
    path = write_tif(tmp_path / "far.tif", np.ones((10, 10), np.float32), src)
    elsewhere = utm_grid(width=10, height=10, x0=10_000.0, y0=100.0)
    with pytest.raises(UserError, match="covers 0.0% of the target grid") as exc, RasterOnGrid(path, elsewhere):
        pass
    assert str(path) in str(exc.value)
    half = utm_grid(width=20, height=10, x0=0.0, y0=100.0)
    with RasterOnGrid(path, half):  # half covered is fine by default...
        pass
    with pytest.raises(UserError, match="covers 50.0%"), RasterOnGrid(path, half, min_coverage=0.99):
        pass  # ...unless asked for full coverage


def test_a_global_lonlat_raster_reads_onto_a_utm_grid(tmp_path) -> None:
    world = Grid("EPSG:4326", Affine(1.0, 0, -180.0, 0, -1.0, 90.0), 360, 180)
    lat = np.repeat(np.arange(89.5, -90, -1.0)[:, None], 360, axis=1).astype(np.float32)
    path = write_tif(tmp_path / "world.tif", lat, world, nodata=-9999.0)
    scene = utm_grid(width=50, height=50, res=100.0)  # about 24.8 N
    with RasterOnGrid(path, scene, "nearest", bands=1, min_coverage=1.0) as r:
        arr = r.read()
    assert np.all(arr == 24.5)


def test_read_errors_are_one_line_user_errors_naming_the_path(tmp_path) -> None:
    grid = utm_grid()
    missing = tmp_path / "missing.tif"
    for call in (lambda p: RasterOnGrid(p, grid).__enter__(), read_raster):
        with pytest.raises(UserError, match="raster not found") as exc:
            call(missing)
        assert str(missing) in str(exc.value)
    no_crs = write_tif(tmp_path / "nocrs.tif", np.zeros((4, 4), np.float32), None)
    with pytest.raises(UserError, match="has no CRS") as exc:
        read_raster(no_crs)
    assert str(no_crs) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(UserError, match="folder"):
        read_raster(tmp_path)
    # a truncated file: the header survives, the pixel data does not
    big = utm_grid(width=300, height=300)
    full = write_tif(tmp_path / "full.tif", np.random.default_rng(0).random(big.shape, np.float32), big)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    for read in (read_raster, lambda p: RasterOnGrid(p, big, bands=1).__enter__().read()):
        with pytest.raises(UserError, match="cannot read raster") as exc:
            read(cut)
        assert str(cut) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.real_data
def test_real_s2_20m_band_windowed_onto_10m_grid_equals_whole_reprojection() -> None:
    data = shared_dataset("sentinel2_l2a_cogs_29RKH")
    g10 = Grid.from_raster(data / "B04.tif")
    with rasterio.open(data / "B05.tif") as src:
        expected = np.full(g10.shape, np.nan, np.float32)
        reproject(
            rasterio.band(src, 1),
            expected,
            dst_transform=g10.transform,
            dst_crs=g10.crs,
            resampling=Resampling.bilinear,
            src_nodata=0,
            dst_nodata=np.nan,
        )
        native = src.read(1)
    with RasterOnGrid(data / "B05.tif", g10, "bilinear", bands=1) as r:
        got = _assemble(r, tile_windows(g10, 256, 32))
    np.testing.assert_array_equal(got, expected)
    assert 1000 < np.nanmedian(got) < 6000  # L2A reflectance x 10000 over desert
    # a 10 m pixel at the centre of each 20 m pixel's 2x2 block lies between its neighbours' values
    assert abs(float(np.nanmedian(got)) - float(np.median(native[native > 0]))) < 50
    with RasterOnGrid(data / "SCL.tif", g10, "nearest", bands=1) as r:
        scl = r.read(Window(0, 0, 512, 512))
    with rasterio.open(data / "SCL.tif") as src:
        classes = set(np.unique(src.read(1))) - {0}
    assert set(np.unique(scl[~np.isnan(scl)]).astype(int)) <= classes


@pytest.mark.real_data
def test_real_dem_does_not_cover_the_s2_scene() -> None:
    s2 = Grid.from_raster(shared_dataset("sentinel2_l2a_cogs_29RKH") / "B04.tif")
    dem = shared_dataset("copernicus_dem_cog") / "Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"
    with pytest.raises(UserError, match="covers 0.0%") as exc, RasterOnGrid(dem, s2):
        pass
    assert "Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif" in str(exc.value)


# -- writing --------------------------------------------------------------------------------------
def test_cog_writer_output_is_a_valid_cog_with_crs_transform_nodata(tmp_path) -> None:
    grid = utm_grid(width=1100, height=700, res=10.0)
    field = smooth_field(grid)
    target = tmp_path / "out.tif"
    with CogWriter(target, grid, "float32", np.nan, tags={"units": "m"}, band_descriptions=["elevation"]) as w:
        for win in iter_windows(grid, 256, 300):
            rows = slice(win.row_off, win.row_off + win.height)
            cols = slice(win.col_off, win.col_off + win.width)
            w.write(field[rows, cols], win)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]  # no temporaries left
    _assert_same_georef(target, grid, np.nan)
    with rasterio.open(target) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.block_shapes[0] == (512, 512) and ds.profile["tiled"]
        assert ds.overviews(1) == [2, 4]
        assert ds.tags()["units"] == "m" and ds.descriptions == ("elevation",)
        np.testing.assert_array_equal(ds.read(1), field)


def test_unwritten_windows_read_back_as_nodata_and_ints_take_nan_as_nodata(tmp_path) -> None:
    grid = utm_grid(width=40, height=30)
    with CogWriter(tmp_path / "m.tif", grid, "uint8", 255) as w:
        block = np.where(np.eye(10, 20) > 0, np.nan, 1.0)
        w.write(block, Window(0, 0, 20, 10))
    with rasterio.open(tmp_path / "m.tif") as ds:
        arr = ds.read(1)
        assert ds.nodata == 255 and ds.dtypes[0] == "uint8" and ds.overviews(1) == []
    assert (arr[:10, :20][np.eye(10, 20) > 0] == 255).all() and (arr[1, 0] == 1)
    assert (arr[10:, :] == 255).all() and (arr[:, 20:] == 255).all()


def test_cog_writer_leaves_nothing_behind_on_error(tmp_path) -> None:
    grid = utm_grid(width=64, height=64)
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError, match="boom"), CogWriter(target, grid, "float32", np.nan) as w:
        w.write(np.zeros((32, 64), np.float32), Window(0, 0, 64, 32))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    # an existing output is untouched by a failed rewrite
    write_cog(target, np.ones(grid.shape, np.float32), grid, np.nan)
    before = target.read_bytes()
    with pytest.raises(ValueError, match="does not match window"), CogWriter(target, grid, "float32", np.nan) as w:
        w.write(np.zeros((3, 3), np.float32), Window(0, 0, 64, 32))
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_cog_writer_rejects_bad_nodata_and_values(tmp_path) -> None:
    grid = utm_grid(width=8, height=8)
    with pytest.raises(ValueError, match="needs a nodata"):
        CogWriter(tmp_path / "a.tif", grid, "float32", None)
    with pytest.raises(ValueError, match="outside the range of uint8"):
        CogWriter(tmp_path / "a.tif", grid, "uint8", -1)
    with pytest.raises(ValueError, match="cannot be stored in int16"):
        CogWriter(tmp_path / "a.tif", grid, "int16", np.nan)
    with pytest.raises(ValueError, match="do not fit uint8"), CogWriter(tmp_path / "a.tif", grid, "uint8", 0) as w:
        w.write(np.full((8, 8), 300.0))
    assert list(tmp_path.iterdir()) == []


def test_write_cog_multiband_round_trip(tmp_path) -> None:
    grid = Grid("EPSG:4326", Affine(1e-3, 0, 6.0, 0, -1e-3, 1.0), 50, 40)
    arr = np.stack([np.full(grid.shape, i, np.int16) for i in (1, 2, 3)])
    out = write_cog(tmp_path / "sub" / "s.tif", arr, grid, -1, band_descriptions=["a", "b", "c"], block_rows=7)
    _assert_same_georef(out, grid, -1)
    with rasterio.open(out) as ds:
        assert ds.count == 3 and ds.descriptions == ("a", "b", "c")
        np.testing.assert_array_equal(ds.read(), arr)
    with pytest.raises(ValueError, match="does not match grid shape"):
        write_cog(tmp_path / "x.tif", arr[:, :10], grid, -1)


_MEMORY_SCRIPT = """
import resource, sys
import numpy as np
from common.geo import CogWriter, iter_windows
from tests.geo.helpers import utm_grid
grid = utm_grid(width=8192, height=8192, res=10.0)
block = np.random.default_rng(0).random((512, 8192), dtype=np.float32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with CogWriter(sys.argv[1], grid, "float32", np.nan) as w:
    for win in iter_windows(grid, 512):
        w.write(block, win)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


@pytest.mark.slow
def test_cog_writer_memory_stays_bounded(tmp_path) -> None:
    """An 8192 x 8192 float32 raster (268 MB) is written and converted with well under its size in memory."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "big.tif")],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    grown_mb = float(out.stdout.strip().splitlines()[-1])
    assert grown_mb < 150, f"peak memory grew by {grown_mb:.0f} MB while writing a 268 MB raster"
    with rasterio.open(tmp_path / "big.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and len(ds.overviews(1)) >= 4


def test_block_cache_caps_gdal_cache_inside_only(monkeypatch) -> None:
    """map_event's bound on GDAL's block cache: set inside, GDAL's own outside, an explicit GDAL_CACHEMAX wins."""
    from rasterio.env import get_gdal_config

    from common.geo import block_cache

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = get_gdal_config("GDAL_CACHEMAX")
    with block_cache(64):
        assert get_gdal_config("GDAL_CACHEMAX") == 64 << 20
    assert get_gdal_config("GDAL_CACHEMAX") == before
    monkeypatch.setenv("GDAL_CACHEMAX", "32")
    with block_cache(64):
        assert get_gdal_config("GDAL_CACHEMAX") == before  # the user's setting is left to GDAL

    @block_cache(48)
    def inside() -> int:
        return get_gdal_config("GDAL_CACHEMAX")

    monkeypatch.delenv("GDAL_CACHEMAX")
    assert inside() == 48 << 20 and inside() == 48 << 20  # as a decorator, on every call
