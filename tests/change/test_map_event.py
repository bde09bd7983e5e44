"""map_event on a synthetic event world (no real data needed) and its bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.cli import run_main
from common.geo import RasterOnGrid, write_cog
from pipelines.map_event import main
from tests.change.helpers import (
    FIELD,
    MEADOW,
    QUARRY,
    SLIDE,
    SYN_EVENT,
    SYN_GRID,
    lonlat_box,
    map_event_argv,
    shifted,
    split_into_two_zones,
    write_synthetic_items,
)

EVENT = SYN_EVENT


def _argv(items: Path, dem: Path, out: Path, *extra: str) -> list[str]:
    return map_event_argv(items, dem, out, *extra)


def test_landslide_found_field_and_quarry_not(world, tmp_path: Path, tracking_uri: str) -> None:
    items, dem = world
    out = tmp_path / "out"
    assert main(_argv(items, dem, out)) == 0
    feats = json.loads((out / "landslides.geojson").read_text())["features"]
    assert len(feats) == 1, [f["properties"]["reason"] for f in feats]
    props = feats[0]["properties"]
    assert props["mean_slope_deg"] > 25 and props["mean_dndvi"] < -0.3
    assert "bare_after" in props["evidence"] and "steep" in props["evidence"]
    assert props["clear_obs_pre"] == 2 and props["clear_obs_post"] == 1  # the cloud on the first post date
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected_pixels"]["flat_ground (vegetation loss on flat ground: likely harvest)"] > 0
    with RasterOnGrid(out / "probability.tif", SYN_GRID, "nearest", bands=1) as r:
        prob = r.read()
    assert np.nanmean(prob[SLIDE]) > 0.95  # loss, steep, vegetated before
    assert np.nanmean(prob[FIELD]) < 0.55  # the same loss, damped by the slope gate's floor (0.5)
    assert np.nanmean(prob[QUARRY]) < 0.1  # no loss: bare before and after
    assert np.nanmax(prob[MEADOW]) < 0.05  # seasonal greening (vegetation gain on the slope) is not a landslide
    with RasterOnGrid(out / "change.tif", SYN_GRID, "nearest", bands=[1, 2]) as r:
        dndvi, rdndvi = r.read()
    assert np.nanmin(dndvi[MEADOW]) > 0.3 and np.nanmin(rdndvi[MEADOW]) > 0  # a gain, seen as one
    with RasterOnGrid(out / "post.tif", SYN_GRID, "nearest") as r:
        assert r.count == 8
        count = r.read()[-1]
    assert count[55, 65] == 1 and count[75, 30] == 2
    # landslides.gpkg opens in QGIS by confidence (its default style in layer_styles)
    import sqlite3
    import xml.etree.ElementTree as ET
    from contextlib import closing

    import pyogrio

    assert pyogrio.read_info(out / "landslides.gpkg", layer="landslides")["features"] == 1
    with closing(sqlite3.connect(out / "landslides.gpkg")) as con:
        styles = con.execute("SELECT f_table_name, styleQML, useAsDefault FROM layer_styles").fetchall()
    assert [(t, d) for t, _q, d in styles] == [("landslides", 1), ("rejected", 1)]
    renderer = ET.fromstring(styles[0][1]).find(".//renderer-v2")
    assert renderer.get("attr") == "confidence"
    assert [r.get("label").split(" ")[0] for r in renderer.iter("range")] == ["low", "medium", "high"]
    by_kind = ET.fromstring(styles[1][1]).find(".//renderer-v2")
    assert by_kind.get("attr") == "kind"
    assert [c.get("value") for c in by_kind.iter("category")] == ["flat_loss", "segmenter_only"]


def _pixel(feature: dict) -> tuple[int, int]:
    """The (row, col) of a GeoJSON feature's centroid on the synthetic grid."""
    import shapely

    from common.geo import transform_geometries

    c = transform_geometries(shapely.geometry.shape(feature["geometry"]).centroid, "EPSG:4326", SYN_GRID.crs)
    t = SYN_GRID.transform
    return int((c.y - t.f) / t.e), int((c.x - t.c) / t.a)


def _in(rc: tuple[int, int], box: tuple[slice, slice]) -> bool:
    return box[0].start <= rc[0] < box[0].stop and box[1].start <= rc[1] < box[1].stop


def test_the_harvested_field_is_a_rejected_candidate_never_a_landslide(world, tmp_path: Path, tracking_uri: str):
    """The field (vegetation loss on flat ground) is in the ``rejected`` layer with its reason, not in the inventory;
    both layers in the GeoPackage, the rejected one also as rejected.geojson; counted in the summary and report."""
    import pyogrio

    items, dem = world
    out = tmp_path / "out"
    assert main(_argv(items, dem, out)) == 0
    rejected = json.loads((out / "rejected.geojson").read_text())["features"]
    assert len(rejected) == 1, [f["properties"] for f in rejected]
    props = rejected[0]["properties"]
    assert props["kind"] == "flat_loss" and _in(_pixel(rejected[0]), FIELD)
    assert props["reason"] == "vegetation loss on flat ground (slope 0 deg): likely harvest or clearing"
    assert props["mean_dndvi"] < -0.3 and props["mean_slope_deg"] < 1
    assert props["area_m2"] == pytest.approx(20 * 20 * 100, rel=0.02)  # geodesic, the 20 x 20 px field
    assert set(props) == {"id", "area_m2", "kind", "reason", "mean_dndvi", "mean_slope_deg", "centroid_lon",
                          "centroid_lat"}  # fmt: skip
    slides = json.loads((out / "landslides.geojson").read_text())["features"]
    assert not any(_in(_pixel(f), FIELD) for f in slides) and all(_in(_pixel(f), SLIDE) for f in slides)
    info = pyogrio.read_info(out / "landslides.gpkg", layer="rejected")
    assert info["features"] == 1 and info["crs"] == SYN_GRID.crs  # the data's CRS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_rejected"] == 1 and summary["rejected"] == {"flat_loss": 1, "segmenter_only": 0}
    assert "rejected.geojson" in summary["outputs"]
    import mlflow

    run = mlflow.search_runs(experiment_names=["event-map"], output_format="list", order_by=["start_time DESC"])[0]
    assert run.data.metrics["n_rejected"] == 1 and run.data.metrics["rejected_flat_loss"] == 1
    assert "rejected.geojson" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    report = (out / "report.html").read_text()
    assert "1 candidate rejected: 1 vegetation loss on flat ground" in report and "likely harvest or clearing" in report
    # smaller than --min-area-m2: left out like a too small landslide
    small = tmp_path / "small"
    assert main(_argv(items, dem, small, "--min-area-m2", "50000")) == 0
    assert json.loads((small / "rejected.geojson").read_text())["features"] == []


def test_susceptibility_is_fused(world, tmp_path: Path, tracking_uri: str) -> None:
    items, dem = world
    sus = tmp_path / "sus.tif"
    write_cog(sus, np.full(SYN_GRID.shape, 0.9, np.float32), SYN_GRID, nodata=np.nan)
    plain, fused = tmp_path / "plain", tmp_path / "fused"
    assert main(_argv(items, dem, plain)) == 0
    assert main(_argv(items, dem, fused, "--susceptibility", str(sus))) == 0
    a = json.loads((plain / "landslides.geojson").read_text())["features"][0]["properties"]
    b = json.loads((fused / "landslides.geojson").read_text())["features"][0]["properties"]
    assert b["confidence"] > a["confidence"] and b["susceptibility"] == pytest.approx(0.9, abs=1e-3)
    assert "susceptible" in b["evidence"]


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> None:
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("future", ("--event-date", "not in the past")),
        ("no_post", ("post-event window",)),
        ("not_yet", ("post-event window", "next Sentinel-2 acquisition is expected around 2023-05-10")),
        ("area", ("--max-area-km2",)),
        ("dem", ("--dem", "does not cover")),
        ("no_dates", ("has no date",)),
    ],
)
def test_bad_input_one_line_nothing_left(case, words, world, tmp_path: Path, tracking_uri: str, capsys) -> None:
    items, dem = world
    out = tmp_path / "out"
    argv = _argv(items, dem, out)
    if case == "future":
        argv[argv.index("--event-date") + 1] = "2999-01-01"
    elif case == "no_post":
        argv += ["--post-days", "5"]
    elif case == "not_yet":  # only the pre-event items exist yet
        pre_only, _ = write_synthetic_items(tmp_path / "preonly", post_dates=())
        argv[argv.index("--items") + 1] = str(pre_only)
    elif case == "area":
        argv += ["--max-area-km2", "0.1"]
    elif case == "dem":
        far = tmp_path / "far_dem.tif"
        write_cog(far, np.zeros(SYN_GRID.shape, np.float32), shifted(SYN_GRID, 5000.0), nodata=np.nan)
        argv[argv.index("--dem") + 1] = str(far)
    elif case == "no_dates":
        bad_items, _ = write_synthetic_items(tmp_path / "nodates", with_dates=False)
        argv[argv.index("--items") + 1] = str(bad_items)
    _fails(argv, capsys, *words)
    assert not out.exists() or not any(out.iterdir())
    assert not list(tmp_path.glob(".out.*"))


def test_two_tiles_in_two_utm_zones_one_polygon_across_the_border(world, tmp_path: Path, tracking_uri: str) -> None:
    items, dem = world
    two = split_into_two_zones(items, tmp_path / "tiles")
    one_out, two_out = tmp_path / "one", tmp_path / "two"
    assert main(_argv(items, dem, one_out)) == 0
    assert main(_argv(two, dem, two_out)) == 0
    summary = json.loads((two_out / "summary.json").read_text())
    assert len(summary["items"]["pre"]) == 4 and summary["acquisitions"]["pre"] == ["2023-04-20", "2023-05-05"]
    one = json.loads((one_out / "landslides.geojson").read_text())["features"]
    feats = json.loads((two_out / "landslides.geojson").read_text())["features"]
    assert len(feats) == 1, [f["properties"]["reason"] for f in feats]  # the landslide across the border: whole
    a, b = one[0]["properties"], feats[0]["properties"]
    assert b["area_m2"] == pytest.approx(a["area_m2"], rel=0.2)  # two warps blur the edge by about a pixel
    assert b["clear_obs_pre"] == 2  # a+b tiles of one date count once


def test_stac_api_search_and_a_hung_api(world, tmp_path: Path, tracking_uri: str, capsys) -> None:
    import socket
    import threading

    from tests.scenes.stac_server import StacServer

    items, dem = world
    data = json.loads(items.read_text())["features"]
    for it in data:  # a STAC API serves absolute hrefs
        for asset in it["assets"].values():
            asset["href"] = str(items.parent / asset["href"])
    argv = _argv(items, dem, tmp_path / "out")
    i = argv.index("--items")
    with StacServer({"sentinel-2-l2a": data}) as url:
        argv[i : i + 2] = ["--stac-url", url]
        assert main(argv) == 0
    assert len(json.loads((tmp_path / "out" / "landslides.geojson").read_text())["features"]) == 1

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(1)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(hung.accept()[0]), daemon=True).start()
    argv = _argv(items, dem, tmp_path / "hung")
    argv[i : i + 2] = ["--stac-url", f"http://127.0.0.1:{hung.getsockname()[1]}", "--stac-timeout", "1"]
    try:
        _fails(argv, capsys, "STAC API", "127.0.0.1")
    finally:
        for c in accepted:
            c.close()
        hung.close()
    assert not (tmp_path / "hung").exists()


def test_aoi_file_in_any_crs(world, tmp_path: Path, tracking_uri: str) -> None:
    import shapely

    from common.geo import Feature, transform_geometries, write_gpkg

    items, dem = world
    box = transform_geometries(shapely.box(*lonlat_box(SYN_GRID, inset_m=60.0)), "EPSG:4326", "EPSG:3857")
    aoi = write_gpkg([Feature(box, {"name": "area"})], tmp_path / "aoi.gpkg", "EPSG:3857")
    argv = _argv(items, dem, tmp_path / "out")
    i = argv.index("--bbox")
    argv[i : i + 5] = ["--aoi", str(aoi)]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["bbox"] == pytest.approx(list(lonlat_box(SYN_GRID, inset_m=60.0)), abs=1e-6)
    assert summary["n_landslides"] == 1


def test_dem_collection_from_the_stac_api(world, tmp_path: Path, tracking_uri: str) -> None:
    import shapely

    from common.geo import Grid, transform_geometries
    from tests.scenes.stac_server import StacServer

    items, _dem = world
    data = json.loads(items.read_text())["features"]
    for it in data:
        for asset in it["assets"].values():
            asset["href"] = str(items.parent / asset["href"])
    # the synthetic slope on a lon/lat grid well beyond the area, as a cop-dem-glo-30 item
    w, s, e, n = transform_geometries(shapely.box(*SYN_GRID.bounds), SYN_GRID.crs, "EPSG:4326").buffer(0.01).bounds
    grid = Grid.from_bounds((w, s, e, n), "EPSG:4326", 1 / 3600)
    lon, lat = grid.cell_centres()
    pts = transform_geometries(shapely.points(np.column_stack([lon.ravel(), lat.ravel()])), "EPSG:4326", SYN_GRID.crs)
    x = shapely.get_x(pts).reshape(grid.shape)
    col = (x - SYN_GRID.transform.c) / 10.0 - 0.5
    z = (100.0 + np.tan(np.radians(30.0)) * np.clip(col - 48, 0, None) * 10.0).astype(np.float32)
    write_cog(tmp_path / "cop.tif", z, grid, nodata=np.nan)
    dem_item = {
        "type": "Feature",
        "id": "Copernicus_DSM_test",
        "collection": "cop-dem-glo-30",
        "geometry": shapely.geometry.mapping(shapely.box(w, s, e, n)),
        "bbox": [w, s, e, n],
        "properties": {"datetime": "2021-04-22T00:00:00Z"},
        "assets": {"data": {"href": str(tmp_path / "cop.tif"), "roles": ["data"]}},
    }
    argv = _argv(items, _dem, tmp_path / "out")
    i = argv.index("--items")
    with StacServer({"sentinel-2-l2a": data, "cop-dem-glo-30": [dem_item]}) as url:
        argv[i : i + 2] = ["--stac-url", url]
        j = argv.index("--dem")
        argv[j : j + 2] = ["--dem-collection", "cop-dem-glo-30"]
        assert main(argv) == 0
    feats = json.loads((tmp_path / "out" / "landslides.geojson").read_text())["features"]
    assert len(feats) == 1 and feats[0]["properties"]["mean_slope_deg"] > 25
    assert not list(tmp_path.glob(".out.*"))  # the fetched DEM is removed after success


def test_flag_defaults_are_the_library_defaults() -> None:
    """map_event writes the detector, gate and segmenter defaults out (its --help loads no NumPy): they must agree."""
    from imagery.change.detector import DetectorParams
    from imagery.change.segmenter import GateParams, SegmenterSettings
    from pipelines import map_event

    o = map_event.COMMAND.parse(["--bbox", "0", "0", "1", "1", "--event-date", EVENT, "--out", "o"])
    d, g, s = DetectorParams(), GateParams(), SegmenterSettings()
    assert (o.min_ndvi_loss, o.min_slope_deg, o.min_pre_ndvi, o.min_clear) == (
        d.min_ndvi_loss,
        d.min_slope_deg,
        d.min_pre_ndvi,
        d.min_clear,
    )
    assert (o.gate_score, o.gate_susceptibility, o.gate_min_pixels, not o.no_gate) == (
        g.score_floor,
        g.susceptibility_floor,
        g.min_pixels,
        g.enabled,
    )
    assert (o.segmenter_weight, o.batch_size, o.device, o.tta) == (s.weight, s.batch_size, s.device, s.tta)


def test_one_of_each_exclusive_pair_is_required(world, tmp_path: Path, tracking_uri: str, capsys) -> None:
    """--bbox/--aoi, --items/--stac-url, --dem/--dem-collection: one of each, as a one-line error before any run."""
    import mlflow

    items, dem = world
    base = ["--event-date", EVENT, "--out", str(tmp_path / "o"), "--tracking-uri", tracking_uri]
    box = ["--bbox", "11.0", "44.0", "11.01", "44.01"]
    _fails([*base, "--items", str(items), "--dem", str(dem)], capsys, "--bbox --aoi", "required")
    _fails([*base, *box, "--aoi", "a.gpkg", "--items", str(items), "--dem", str(dem)], capsys, "--aoi", "not allowed")
    _fails([*base, *box, "--dem", str(dem)], capsys, "--items --stac-url", "required")
    _fails([*base, *box, "--items", str(items), "--stac-url", "http://x"], capsys, "--stac-url", "not allowed")
    _fails([*base, *box, "--items", str(items)], capsys, "--dem --dem-collection", "required")
    assert mlflow.search_runs(search_all_experiments=True).empty
    assert not (tmp_path / "o").exists()
