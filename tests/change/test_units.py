"""Indices, the detector, the change fusion rule, compositing and the Sen12Landslides reader."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import pytest

from common.cli import UserError
from common.geo import write_cog
from fusion.change_fusion import fuse_change
from imagery.change.acquisition import Observation, output_grid, utm_crs
from imagery.change.composite import LAYERS, composite_block
from imagery.change.detector import DetectorParams, change_score, detect
from imagery.change.indices import bsi, dndvi, ndvi, rdndvi
from imagery.data.sen12landslides import Sen12LandslidesS1, Sen12LandslidesS2, decode_time, reader_for
from imagery.data.sentinel2 import BandFile
from tests.change.helpers import SYN_GRID
from tests.conftest import shared_dataset


def test_indices() -> None:
    assert ndvi(np.array([0.1]), np.array([0.3]))[0] == pytest.approx(0.5)
    assert np.isnan(ndvi(np.array([0.0]), np.array([0.0]))[0])
    assert bsi(np.array([0.1]), np.array([0.2]), np.array([0.2]), np.array([0.3]))[0] == pytest.approx(0.2 / 0.8)
    assert dndvi(np.array([0.8]), np.array([0.2]))[0] == pytest.approx(-0.6)
    # HazMapper: 100 (post - pre) / sqrt(pre + post)
    assert rdndvi(np.array([0.8]), np.array([0.2]))[0] == pytest.approx(-60.0)
    assert rdndvi(np.array([0.36]), np.array([0.0]))[0] == pytest.approx(-60.0)
    assert np.isnan(rdndvi(np.array([-0.2]), np.array([0.1]))[0])


def test_detector_rules() -> None:
    # landslide, harvest on flat ground, quarry (bare before), unobserved, small loss
    d = np.array([-0.5, -0.5, -0.02, -0.5, -0.05])
    slope = np.array([30.0, 1.0, 30.0, 30.0, 30.0])
    pre = np.array([0.8, 0.8, 0.1, 0.8, 0.8])
    c_pre = np.array([3, 3, 3, 0, 3])
    c_post = np.array([2, 2, 2, 2, 2])
    hit = detect(d, slope, pre, c_pre, c_post)
    assert hit.tolist() == [True, False, False, False, False]
    score = change_score(d, slope, pre, c_pre, c_post)
    assert np.isnan(score[3])
    assert score[0] > 0.95 and score[0] > score[1] > score[2] and score[0] > score[4]
    assert detect(d, slope, pre, c_pre, c_post, DetectorParams(min_slope_deg=0.5))[1]
    with pytest.raises(ValueError, match="floor"):
        DetectorParams(floor=2.0)


def test_change_fusion_rule() -> None:
    score = np.array([0.3, 0.3, 0.3, np.nan], np.float32)
    assert np.array_equal(fuse_change(score), score, equal_nan=True)
    out = fuse_change(score, np.array([0.5, 0.9, 0.1, 0.9]))
    assert out[0] == pytest.approx(0.3, abs=1e-5) and out[1] > 0.3 > out[2] and np.isnan(out[3])
    assert fuse_change(score, np.array([0.9, 0.9, 0.9, 0.9]), weight=0.0)[1] == pytest.approx(0.3, abs=1e-5)
    full = fuse_change(np.array([0.5]), np.array([0.2]), weight=1.0)  # full Bayes: the prior replaced
    assert full[0] == pytest.approx(0.2, abs=1e-4)
    assert fuse_change(score, np.array([np.nan] * 4))[0] == pytest.approx(0.3, abs=1e-5)


def _obs(folder: Path, name: str, day: str, values: dict[str, float], scl: np.ndarray, orbit: int = 22) -> Observation:
    import shapely

    from common.geo import transform_geometries

    files = {}
    for band, v in values.items():
        path = folder / f"{name}_{band}.tif"
        write_cog(path, np.full(SYN_GRID.shape, v, np.float32), SYN_GRID, nodata=np.nan)
        files[band] = BandFile(band, str(path), 1, 1.0, 0.0)
    write_cog(folder / f"{name}_SCL.tif", scl, SYN_GRID, nodata=0)
    files["SCL"] = BandFile("SCL", str(folder / f"{name}_SCL.tif"), 1, 1.0, 0.0)
    fp = transform_geometries(shapely.box(*SYN_GRID.bounds), SYN_GRID.crs, "EPSG:4326")
    return Observation(name, dt.date.fromisoformat(day), orbit, files, 10.0, fp)


def test_composite_masks_clouds_mosaics_one_acquisition(tmp_path: Path) -> None:
    from common.geo.grid import Window

    base = {"B2": 0.05, "B3": 0.06, "B4": 0.05, "B8": 0.30, "B11": 0.15}
    clear = np.full(SYN_GRID.shape, 4, np.uint8)
    cloudy = clear.copy()
    cloudy[:, :48] = 9  # west half under cloud
    half = clear.copy()
    half[:, 48:] = 0  # an item covering only the west half (another tile, same date and orbit)
    a = _obs(tmp_path, "a", "2023-05-20", base, cloudy)
    b = _obs(tmp_path, "b", "2023-05-20", {**base, "B8": 0.25}, half)
    c = _obs(tmp_path, "c", "2023-06-01", {**base, "B8": 0.40}, clear)
    win = Window(0, 0, SYN_GRID.width, SYN_GRID.height)
    out = composite_block([a, b, c], SYN_GRID, win)
    count = out[LAYERS.index("clear_count")]
    assert (count[:, :48] == 2).all() and (count[:, 49:] == 2).all()  # a+b are one acquisition; c the other
    assert (count[:, 48] == 1).all()  # a's cloud grown by one pixel (b does not reach column 48)
    nir = out[LAYERS.index("B8")]
    assert nir[10, 10] == pytest.approx((0.25 + 0.40) / 2) and nir[10, 80] == pytest.approx((0.30 + 0.40) / 2)
    only_cloud = composite_block([a], SYN_GRID, win)
    assert np.isnan(only_cloud[0][:, :48]).all() and (only_cloud[-1][:, :48] == 0).all()


def test_output_grid_is_utm_10m() -> None:
    assert utm_crs(11.6, 44.3) == "EPSG:32632" and utm_crs(-70.0, -33.0) == "EPSG:32719"
    g = output_grid((11.57, 44.32, 11.59, 44.34))
    assert g.crs == "EPSG:32632" and g.res == (10.0, 10.0) and g.transform.c % 10 == 0


def test_sen12_reader_real() -> None:
    folder = shared_dataset("sen12landslides_italy_4120")
    with pytest.warns(UserWarning, match="pre_post_dates says 7 pre \\+ 8 post"):
        s2 = Sen12LandslidesS2()(folder / "italy_s2_4120.nc")
    assert s2.grid.crs == "EPSG:32632" and s2.grid.shape == (128, 128)
    assert s2.grid.transform.c == 705280.0 and s2.grid.transform.f == 4912640.0
    assert s2.dates[0] == dt.date(2022, 10, 5) and s2.dates[7] == dt.date(2023, 5, 13)
    assert s2.pre.tolist() == list(range(8)) and s2.post.tolist() == list(range(8, 15))
    assert s2.mask.sum() == 631 and s2.bands["B04"].shape == (15, 128, 128) and s2.scl.shape == (15, 128, 128)
    assert 0 < float(np.nanmedian(s2.reflectance("B08"))) < 1
    from sklearn.metrics import roc_auc_score

    d = s2.composite("NDVI", s2.post) - s2.composite("NDVI", s2.pre)
    ok = np.isfinite(d)
    assert roc_auc_score(s2.mask[ok], -d[ok]) == pytest.approx(0.81, abs=0.01)  # SOURCE.md's realness check
    with pytest.warns(UserWarning, match="9 pre \\+ 10 post"):
        s1 = reader_for(folder / "italy_s1asc_4120.nc")(folder / "italy_s1asc_4120.nc")
    assert s1.sensor == "s1" and set(s1.bands) == {"VV", "VH"} and s1.scl is None and len(s1.pre) == 10


def _write_nc(path: Path, *, geotransform: bool, pre_post: str, event: str = "2023-05-16") -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["event_date"] = np.bytes_(event)
        f.attrs["pre_post_dates"] = np.bytes_(pre_post)
        t = f.create_dataset("time", data=np.array([0, 10, 20, 30]))
        t.attrs["units"] = np.bytes_("days since 2023-05-01")
        f.create_dataset("x", data=np.arange(4) * 10.0 + 5.0)
        f.create_dataset("y", data=100.0 - np.arange(3) * 10.0 - 5.0)
        sr = f.create_dataset("spatial_ref", data=0)
        sr.attrs["crs_wkt"] = np.bytes_("EPSG:32633")
        if geotransform:
            sr.attrs["GeoTransform"] = np.bytes_("0.0 10.0 0.0 100.0 0.0 -10.0")
        for name in ("VV", "VH"):
            f.create_dataset(name, data=np.ones((4, 3, 4), np.float32))
        f.create_dataset("MASK", data=np.zeros((4, 3, 4), np.uint8))


def test_sen12_reader_synthetic(tmp_path: Path) -> None:
    path = tmp_path / "x_s1asc_1.nc"
    _write_nc(path, geotransform=False, pre_post="{'pre': 2, 'post': 2}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the attribute agrees: no warning
        patch = Sen12LandslidesS1()(path)
    assert patch.dates[1] == dt.date(2023, 5, 11) and patch.pre.tolist() == [0, 1] and patch.post.tolist() == [2, 3]
    assert patch.grid.transform.c == 0.0 and patch.grid.transform.f == 100.0  # centres -> corner
    _write_nc(path, geotransform=True, pre_post="{'pre': 3, 'post': 1}")
    with pytest.warns(UserWarning, match="using the time axis"):
        assert Sen12LandslidesS1()(path).warnings
    with pytest.raises(UserError, match="missing variable"):
        Sen12LandslidesS2()(path)
    with pytest.raises(UserError, match="not found"):
        Sen12LandslidesS2()(tmp_path / "none_s2_1.nc")
    assert decode_time([1, 2], "hours since 2023-01-01 00:00") == (dt.date(2023, 1, 1),) * 2
    with pytest.raises(UserError, match="time units"):
        decode_time([1], "fortnights since 2023")
