"""fetch_scene: the real pystac-client search against a STAC API served locally from the saved real JSON."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import mlflow
import numpy as np
import pytest
import rasterio
import shapely

from common.cli import UserError, run_main
from common.geo import Grid
from imagery.data.stac import check_bbox, load_items, pick_item
from pipelines.fetch_scene import main
from tests.conftest import shared_dataset
from tests.scenes.helpers import local_29rkh_item, write_tif
from tests.scenes.stac_server import StacServer

BOX = (-11.8, 24.6, -11.6, 24.8)  # inside tile 29RKH (Western Sahara)


def _cli(args: list[str], tracking_uri: str) -> int:
    return run_main(main, [*args, "--tracking-uri", tracking_uri])


def _box_args(out: Path) -> list[str]:
    return ["--bbox", *map(str, BOX), "--start", "2020-02-01", "--end", "2020-02-29", "--out", str(out)]


def _synthetic_dem_item(tmp: Path) -> dict:
    """A DEM item (cop-dem-glo-30 style, asset 'data') over the 29RKH box, in EPSG:4326."""
    grid = Grid.from_bounds((-12.0, 24.4, -11.4, 25.0), "EPSG:4326", 1 / 1200)
    lon, lat = grid.cell_centres()
    write_tif(
        tmp / "dem.tif",
        (300 + 100 * np.sin(lon * 30) * np.cos(lat * 30)).astype(np.float32),
        "EPSG:4326",
        grid.transform,
    )
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "Copernicus_DSM_test",
        "collection": "cop-dem-glo-30",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[-12, 24.4], [-11.4, 24.4], [-11.4, 25], [-12, 25], [-12, 24.4]]],
        },
        "bbox": [-12, 24.4, -11.4, 25],
        "properties": {"datetime": "2021-04-22T00:00:00Z"},
        "links": [],
        "assets": {
            "data": {"href": str(tmp / "dem.tif"), "type": "image/tiff; application=geotiff", "roles": ["data"]}
        },
    }


@pytest.mark.real_data
def test_fetch_through_a_local_stac_api_then_predict_reads_it(tmp_path: Path, tracking_uri: str, capsys) -> None:
    item = json.loads(local_29rkh_item(tmp_path).read_text())
    dem_item = _synthetic_dem_item(tmp_path)
    out = tmp_path / "scene"
    with StacServer({"sentinel-2-l2a": [item], "cop-dem-glo-30": [dem_item]}) as url:
        code = _cli([*_box_args(out), "--stac-url", url, "--dem-collection", "cop-dem-glo-30"], tracking_uri)
    assert code == 0, capsys.readouterr().err
    scene = json.loads((out / "scene.json").read_text())
    assert scene["id"] == "S2A_29RKH_20200219_0_L2A" and scene["date"] == "2020-02-19" and scene["crs"] == "EPSG:32629"
    assert scene["bands"]["B4"]["scale"] == pytest.approx(1e-4) and scene["bands"]["B4"]["asset"] == "red"
    names = sorted(p.name for p in out.glob("*.tif"))
    assert "B02.tif" in names and "B8A.tif" in names and "SCL.tif" in names and "dem.tif" in names
    # only the box, cut from the source COG without resampling, 10/20/60 m bands on the same extent
    src = shared_dataset("sentinel2_l2a_cogs_29RKH")
    with rasterio.open(out / "B04.tif") as small, rasterio.open(src / "B04.tif") as full:
        window = full.window(*small.bounds)
        np.testing.assert_array_equal(small.read(1), full.read(1, window=window.round_offsets().round_lengths()))
        assert small.width < full.width / 4 and small.crs == full.crs
        bounds = small.bounds
    with rasterio.open(out / "B01.tif") as b1:
        assert b1.bounds == bounds
    # predict_scene reads the folder (scale/offset from scene.json)
    from imagery.data.sentinel2 import open_scene

    s = open_scene(out)
    assert s.scale_source == "scene.json" and s.scene_id == scene["id"] and "B8A" in s.bands
    run = mlflow.search_runs(experiment_names=["imagery-fetch"], output_format="list")[0]
    assert run.info.status == "FINISHED"


@pytest.mark.real_data
def test_least_cloudy_covering_item_of_a_real_item_collection() -> None:
    items = load_items(shared_dataset("stac_items") / "site2-2020_jun_jul-35MNM.geojson")
    box = (27.4, -7.8, 27.5, -7.7)
    covering = [it for it in items if shapely_covers(it, box)]
    best = pick_item(items, box, start="2020-06-01", end="2020-07-31")
    assert best["id"] in {it["id"] for it in covering}
    assert best["properties"]["eo:cloud_cover"] == min(it["properties"]["eo:cloud_cover"] for it in covering)
    assert best["id"].startswith("S2B_MSIL2A_20200726")  # 0.0036% cloud, the least of the 13
    june = pick_item(items, box, start="2020-06-01", end="2020-06-30")
    assert june["id"].startswith("S2B_MSIL2A_20200616")
    with pytest.raises(UserError, match="no Sentinel-2 item for bbox"):
        pick_item(items, box, start="2021-01-01", end="2021-01-31")


def shapely_covers(item: dict, box: tuple) -> bool:

    return shapely.geometry.shape(item["geometry"]).contains(shapely.box(*box))


@pytest.mark.real_data
def test_saved_earth_search_v0_item_with_b04_keys(tmp_path: Path, tracking_uri: str) -> None:
    """An Earth Search v0 item (asset keys B04 ...), its hrefs and footprint pointed at the local 29RKH COGs."""
    v0 = json.loads((shared_dataset("stac_items") / "S2A_28QCH_20200714_0_L2A.json").read_text())
    v1 = json.loads(local_29rkh_item(tmp_path).read_text())
    src = shared_dataset("sentinel2_l2a_cogs_29RKH")
    for key, asset in v0["assets"].items():
        if (src / f"{key}.tif").exists():
            asset["href"] = str(src / f"{key}.tif")
    v0["geometry"], v0["properties"]["datetime"] = v1["geometry"], "2020-02-19T11:34:25Z"
    (tmp_path / "v0.json").write_text(json.dumps(v0))
    out = tmp_path / "scene"
    assert _cli([*_box_args(out), "--items", str(tmp_path / "v0.json"), "--bands", "B02,B04"], tracking_uri) == 0
    assert sorted(p.name for p in out.glob("*.tif")) == ["B02.tif", "B04.tif", "SCL.tif"]


def test_bad_requests_are_one_line_errors(tmp_path: Path, tracking_uri: str, capsys) -> None:
    def fails(args: list[str], match: str) -> None:
        assert _cli(args, tracking_uri) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err

    out = tmp_path / "o"
    fails(
        ["--bbox", "10", "0", "9", "1", "--start", "2020-01-01", "--end", "2020-02-01", "--out", str(out)],
        "west 10.0 must be less than east 9.0",
    )
    fails(
        ["--bbox", "10", "0", "200", "1", "--start", "2020-01-01", "--end", "2020-02-01", "--out", str(out)],
        "-180..180",
    )
    fails(
        ["--bbox", *map(str, BOX), "--start", "2020-03-01", "--end", "2020-02-01", "--out", str(out)], "is after --end"
    )
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fails([*_box_args(out), "--stac-url", f"http://127.0.0.1:{port}"], f"STAC API http://127.0.0.1:{port}")
    with StacServer({}, status=503) as url:
        fails([*_box_args(out), "--stac-url", url], "returned HTTP 503")
    with StacServer({"sentinel-2-l2a": []}) as url:
        fails([*_box_args(out), "--stac-url", url], "no Sentinel-2 item for bbox")
    assert not out.exists()
    assert check_bbox([1, 2, 3, 4]) == (1.0, 2.0, 3.0, 4.0)
