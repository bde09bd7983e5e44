"""pipelines.assess end to end: the real 29RKH scene, a synthetic scene with factor rasters, clouds,
regions outside the scene, and the bad inputs (one-line errors, nothing half-written)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine

from common.cli import run_main
from pipelines import assess
from tests.conftest import shared_dataset
from tests.scenes.helpers import L2A_BANDS, tiny_model, write_tif

SCENE_29RKH = "sentinel2_l2a_cogs_29RKH"
BOX = ["--bbox", "-11.6", "24.6", "-11.5", "24.7"]  # 0.1 x 0.1 degree inside the 29RKH tile


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny segmenter on the L2A bands that calls every pixel a landslide (p = 0.9): polygons appear."""
    return tiny_model(tmp_path_factory.mktemp("seg") / "seg", L2A_BANDS, prob=0.9)


@pytest.mark.real_data
def test_assess_a_box_on_the_real_scene(seg: Path, tmp_path: Path, tracking_uri: str, capsys) -> None:
    scene = shared_dataset(SCENE_29RKH)
    out = tmp_path / "out"
    argv = [
        *BOX,
        "--date",
        "2020-03-01",
        "--scene",
        str(scene),
        "--imagery-model",
        str(seg),
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        "--json",
        "--allow-resolution-mismatch",  # the tile's 100 m pixels, a 10 m model (issue 17): refused without it
    ]
    assert run_main(assess.main, argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["decisions"] == {"box": 1} and summary["landslides"] >= 1
    regions = pyogrio.read_info(out / "regions.geojson")
    assert regions["crs"] == "EPSG:4326" and regions["features"] == 1
    with rasterio.open(out / "probability.tif") as src:
        assert src.crs.to_epsg() == 32629 and src.nodata is not None
    slides = json.loads((out / "landslides.geojson").read_text())["features"]
    area_km2 = sum(f["properties"]["area_m2"] for f in slides) / 1e6
    assert 0.9 * 110 < area_km2 < 1.1 * 112  # the 0.1 x 0.1 degree box at 24.65 N: about 111 km2, cut to it
    html = (out / "report.html").read_text()
    assert "L.geoJSON" in html and "data:image/png;base64," in html
    assert "http://" not in html.split("<script>")[0] and "<script src=" not in html  # nothing fetched: offline


def _synthetic_world(tmp: Path) -> dict[str, Path]:
    """A small UTM band folder (SCL clear on the west half, cloud on the east half) and two factor rasters."""
    from fusion.demo.synthetic_scene import write_synthetic_scene

    scene = write_synthetic_scene(tmp / "scene", size=120, seed=1, cloud_fraction=0.0, dem=False)
    with rasterio.open(scene / "SCL.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as src:
        scl = src.read(1)
        scl[:, scl.shape[1] // 2 :] = 9  # cloud (high probability) on the east half
        src.write(scl, 1)
        transform, crs = src.transform, src.crs.to_string()
    # factor rasters on a 10 m grid over the west 3/4 of the scene (the east quarter has none)
    t10 = Affine(10.0, 0, transform.c, 0, -10.0, transform.f)
    slope = write_tif(tmp / "slope.tif", np.full((120, 90), 31.0, np.float32), crs, t10, nodata=-9999.0)
    rain = write_tif(tmp / "rain.tif", np.full((120, 90), 80.0, np.float32), crs, t10, nodata=-9999.0)
    return {"scene": scene, "slope": slope, "rain": rain, "transform": transform, "crs": crs}


def test_regions_clouds_and_factor_coverage(seg: Path, tmp_path: Path, tracking_uri: str, capsys) -> None:
    """Three regions: clear with factors; clouded; outside the scene. Fallbacks are marked, not errors."""
    import shapely

    from common.geo import Feature, transform_geometries, write_gpkg

    world = _synthetic_world(tmp_path)
    t = world["transform"]
    x0, y0 = t.c, t.f  # the scene's top-left corner (UTM metres); the scene is 1200 m square
    polys = {
        "clear": shapely.box(x0 + 100, y0 - 500, x0 + 400, y0 - 200),
        "cloud": shapely.box(x0 + 800, y0 - 500, x0 + 1100, y0 - 200),
        "outside": shapely.box(x0 + 5000, y0 - 500, x0 + 5300, y0 - 200),
    }
    gpkg = write_gpkg([Feature(g, {"region_id": k}) for k, g in polys.items()], tmp_path / "regions.gpkg", world["crs"])
    assert transform_geometries(polys["clear"], world["crs"], "EPSG:4326").bounds[0] < 0
    out = tmp_path / "out"
    argv = [
        "--regions",
        str(gpkg),
        "--date",
        "2024-06-01",
        "--scene",
        str(world["scene"]),
        "--imagery-model",
        str(seg),
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert run_main(assess.main, argv) == 0
    rows = {
        f["properties"]["region_id"]: f["properties"]
        for f in json.loads((out / "regions.geojson").read_text())["features"]
    }
    assert rows["clear"]["evidence"] == "imagery_only" and rows["clear"]["decision"] == 1
    assert rows["cloud"]["evidence"] == "none" and rows["cloud"]["decision"] is None
    assert "cloud or no data over the whole region" in rows["cloud"]["note"]
    assert "outside the scene" in rows["outside"]["note"]
    assert "decisions: clear=1, cloud=unknown, outside=unknown" in capsys.readouterr().out
    # regions.gpkg: the same regions in the scene's CRS, opening in QGIS coloured by decision
    import sqlite3
    import xml.etree.ElementTree as ET
    from contextlib import closing

    info = pyogrio.read_info(out / "regions.gpkg", layer="regions")
    assert info["features"] == 3 and rasterio.crs.CRS.from_user_input(info["crs"]) == rasterio.crs.CRS.from_user_input(
        world["crs"]
    )
    with closing(sqlite3.connect(out / "regions.gpkg")) as con:
        styles = con.execute("SELECT f_table_name, styleQML, useAsDefault FROM layer_styles").fetchall()
    assert [(t, d) for t, _q, d in styles] == [("regions", 1)]
    renderer = ET.fromstring(styles[0][1]).find(".//renderer-v2")
    assert renderer.get("attr") == "decision"
    cats = {c.get("value"): c.get("label") for c in renderer.iter("category")}
    assert cats == {"1": "landslide likely", "0": "unlikely", "": "unknown: no evidence"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lat", "95", "--lon", "0"], "-90 <= lat <= 90"),
        (["--bbox", "-11.9", "24.3", "-10.9", "25.3", "--max-area-km2", "100"], "larger than the limit of 100 km2"),
        ([*BOX, "--date", (date.today() + timedelta(days=365)).isoformat()], "in the future"),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str], message: str, seg: Path, tmp_path: Path, tracking_uri: str, capsys
) -> None:
    base = [
        "--date",
        "2020-03-01",
        "--scene",
        str(tmp_path),
        "--imagery-model",
        str(seg),
        "--out",
        str(tmp_path / "out"),
    ]
    assert run_main(assess.main, [*base, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.real_data
def test_no_imagery_for_the_date(seg: Path, tmp_path: Path, tracking_uri: str, capsys) -> None:
    from tests.scenes.helpers import local_29rkh_item

    item = local_29rkh_item(tmp_path)
    argv = [
        *BOX,
        "--date",
        "2023-01-01",
        "--items",
        str(item),
        "--imagery-model",
        str(seg),
        "--out",
        str(tmp_path / "out"),
    ]
    assert run_main(assess.main, argv) == 2
    assert "no Sentinel-2 item for bbox" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["..", "../secret", "a/b", "/etc", "missing", ""])
def test_service_scene_names_stay_in_the_scenes_folder(tmp_path: Path, name: str) -> None:
    from common.cli import UserError
    from service.assess import Assessor
    from service.config import ServiceConfig

    root = tmp_path / "scenes"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    assessor = Assessor(ServiceConfig(scenes_root=str(root)), (None, None, None))
    with pytest.raises(UserError, match="not found among the service's scenes"):
        assessor._scene_path(name)
    (root / "linked").symlink_to(tmp_path / "secret")  # the operator's own link is honoured
    assert assessor._scene_path("linked") == root / "linked"
