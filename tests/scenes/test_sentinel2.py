"""Finding Sentinel-2 bands: band names and aliases, folders, .SAFE, multi-band GeoTIFFs, STAC items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from common.cli import UserError
from imagery.data.bands import canonical_band, canonical_bands, to_model_units
from imagery.data.sentinel2 import band_from_name, item_band_assets, open_scene, read_item_json
from tests.conftest import shared_dataset
from tests.scenes.helpers import local_29rkh_item, write_tif


@pytest.mark.parametrize(
    "name,band",
    [
        ("B02", "B2"),
        ("b8a", "B8A"),
        ("B8A", "B8A"),
        ("red", "B4"),
        ("nir", "B8"),
        ("nir08", "B8A"),
        ("swir16", "B11"),
        ("swir22", "B12"),
        ("coastal", "B1"),
        ("SCL", "SCL"),
        ("B10", "B10"),
        ("dem", "DEM"),
    ],
)
def test_band_aliases(name: str, band: str) -> None:
    assert canonical_band(name) == band


def test_band_sets_are_l4s_ordered_and_reject_b8a() -> None:
    assert canonical_bands(["B08", "red", "B02", "B2"]) == ("B2", "B4", "B8")
    with pytest.raises(UserError, match="B8A .* not one of the L4S model bands"):
        canonical_bands(["B02", "B8A"])
    with pytest.raises(UserError, match="unknown band 'B13'"):
        canonical_band("B13")


def test_model_units_from_reflectance() -> None:
    refl = np.full((3, 2, 2), 0.1, dtype=np.float32)
    out = to_model_units(refl, ["B4", "B8", "slope"])
    np.testing.assert_allclose(out[0], 1000 / 445.17289745, rtol=1e-5)  # reflectance x 10000 / L4S band mean
    np.testing.assert_allclose(out[1], 1000 / 1941.32229668, rtol=1e-5)
    np.testing.assert_allclose(out[2], 0.1 / 20.29228266, rtol=1e-5)  # slope: degrees / L4S mean


@pytest.mark.parametrize(
    "name,band",
    [
        ("T33TUM_20180926T100031_B04_10m.jp2", "B4"),
        ("B8A.tif", "B8A"),
        ("red.tif", "B4"),
        ("SCL_20m.jp2", "SCL"),
        ("T33TUM_20180926T100031_TCI_10m.jp2", None),
        ("AOT.tif", None),
        ("swir16.tif", "B11"),
    ],
)
def test_band_from_file_name(name: str, band: str | None) -> None:
    assert band_from_name(name) == band


@pytest.mark.real_data
def test_real_folder_and_item_find_the_same_bands(tmp_path: Path) -> None:
    folder = open_scene(shared_dataset("sentinel2_l2a_cogs_29RKH"))
    item = open_scene(local_29rkh_item(tmp_path))
    expected = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B11", "B12", "B8A")
    assert folder.bands == item.bands == expected and folder.has_scl and item.has_scl
    assert folder.scene_id == item.scene_id == "S2A_29RKH_20200219_0_L2A"
    assert folder.date == item.date == "2020-02-19" and item.processing_baseline == "02.14"
    assert item.files["B4"].scale == pytest.approx(1e-4) and item.files["B4"].offset == 0.0
    assert Path(item.files["B4"].path).name == "B04.tif"


@pytest.mark.real_data
def test_real_stac_items_of_three_naming_conventions() -> None:
    es_v1 = read_item_json(shared_dataset("sentinel2_l2a_cogs_29RKH") / "S2A_29RKH_20200219_0_L2A.json")
    stac = shared_dataset("stac_items")
    es_v0 = read_item_json(stac / "S2A_28QCH_20200714_0_L2A.json")
    pc = read_item_json(stac / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json")
    keys = {
        name: {b: k for b, (k, _) in item_band_assets(it).items()}
        for name, it in (("v1", es_v1), ("v0", es_v0), ("pc", pc))
    }
    assert keys["v1"]["B4"] == "red" and keys["v1"]["B8A"] == "nir08" and keys["v1"]["SCL"] == "scl"
    assert keys["v0"]["B4"] == "B04" and keys["pc"]["B4"] == "B04" and keys["pc"]["B8A"] == "B8A"
    assert set(keys["v1"]) == set(keys["v0"]) == set(keys["pc"])  # 12 bands + SCL each; JPEG2000 twins skipped


def _safe(tmp: Path, baseline: str = "04.00") -> Path:
    """A tiny L2A .SAFE: B02 at 10 and 20 m, B04 at 10 m, B05 at 20 m, SCL at 20 m, as JPEG2000."""
    root = tmp / "S2B_MSIL2A_20230610T100559_N0509_R022_T33TUM_20230610T130000.SAFE"
    img = root / "GRANULE" / "L2A_T33TUM_A000001_20230610T100559" / "IMG_DATA"
    rng = np.random.default_rng(0)
    for res, names in ((10, ("B02", "B04")), (20, ("B02", "B05", "SCL"))):
        n = 120 // res * 10
        for name in names:
            arr = (rng.integers(1, 4, (n, n)) if name == "SCL" else rng.integers(1000, 3000, (n, n))).astype(np.uint16)
            write_tif(
                img / f"R{res}m" / f"T33TUM_20230610T100559_{name}_{res}m.jp2",
                arr,
                "EPSG:32633",
                Affine(res, 0, 300000, 0, -res, 5000000),
                nodata=0,
                driver="JP2OpenJPEG",
            )
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    (root / "MTD_MSIL2A.xml").write_text(
        f"<n1:Level-2A_User_Product xmlns:n1='x'><General_Info><Product_Info>"
        f"<PRODUCT_START_TIME>2023-06-10T10:05:59.024Z</PRODUCT_START_TIME><PROCESSING_BASELINE>{baseline}"
        f"</PROCESSING_BASELINE><QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE>10000"
        f"</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST><BOA_ADD_OFFSET_VALUES_LIST>{offsets}"
        f"</BOA_ADD_OFFSET_VALUES_LIST></Product_Info></General_Info></n1:Level-2A_User_Product>"
    )
    return root


def test_safe_l2a_finest_resolution_and_baseline_offset(tmp_path: Path) -> None:
    scene = open_scene(_safe(tmp_path))
    assert scene.kind == "safe" and scene.product == "L2A" and scene.processing_baseline == "04.00"
    assert scene.bands == ("B2", "B4", "B5") and scene.has_scl
    assert scene.files["B2"].path.endswith("_B02_10m.jp2")  # the finest of B02 10 m / 20 m
    assert scene.files["B2"].offset == pytest.approx(-0.1) and scene.files["B2"].scale == pytest.approx(1e-4)
    assert scene.date == "2023-06-10"


def test_multiband_geotiff_needs_its_band_order(tmp_path: Path) -> None:
    path = write_tif(
        tmp_path / "stack.tif", np.ones((3, 20, 20), np.uint16), "EPSG:32633", Affine(10, 0, 300000, 0, -10, 5000000)
    )
    with pytest.raises(UserError, match="needs --bands"):
        open_scene(path)
    with pytest.raises(UserError, match="has 3 band.* --bands names 2"):
        open_scene(path, bands=["B02", "B03"])
    scene = open_scene(path, bands=["blue", "green", "B04"])
    assert scene.bands == ("B2", "B3", "B4") and scene.files["B4"].index == 3 and scene.scale_source == "assumed"


def test_scene_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        open_scene(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="no band files found .*readme.txt"):
        open_scene(tmp_path / "empty")
    (tmp_path / "bad.json").write_text(json.dumps({"type": "Feature"}))
    with pytest.raises(UserError, match="expected a STAC item"):
        open_scene(tmp_path / "bad.json")
