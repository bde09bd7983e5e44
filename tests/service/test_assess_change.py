"""assess with an event date: change evidence as the third evidence (command and /v1/assess).

Data: the synthetic event world of tests/change (a landslide on a slope, a harvested field on flat ground, a
cloud over part of the landslide on the post date) written as a local ItemCollection, and the real
Sen12Landslides patch of the May 2023 Emilia-Romagna event (tests/change/test_map_event_real.py).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from common.cli import run_main
from common.geo import Feature, transform_geometries, write_gpkg
from pipelines import assess
from tests.change.helpers import SYN_GRID, write_items, write_synthetic_items
from tests.conftest import shared_dataset
from tests.scenes.helpers import tiny_model

EVENT = "2023-05-16"
SYN_BANDS = ["B2", "B3", "B4", "B8", "B11"]


def _box(rows: slice, cols: slice, grid: Any = SYN_GRID) -> shapely.Polygon:
    t = grid.transform
    return shapely.box(t.c + cols.start * 10, t.f - rows.stop * 10, t.c + cols.stop * 10, t.f - rows.start * 10)


#: Regions of the synthetic world (rows, cols of its grid), at least 20 px (the scene's 200 m margin) inside it.
SYN_REGIONS = {
    "slide": (slice(58, 70), slice(58, 74)),  # vegetated slope, bare after the event
    "cloud": (slice(50, 57), slice(60, 74)),  # under the cloud of the only post date: never seen after
    "field": (slice(40, 60), slice(22, 30)),  # harvested field on flat ground
    "slope": (slice(26, 45), slice(55, 74)),  # vegetated slope, unchanged
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("event_world")
    items, dem = write_synthetic_items(tmp / "world", post_dates=("2023-05-25",))
    seg = tiny_model(tmp / "seg", SYN_BANDS, prob=1e-6)  # an empty mask: the change evidence decides
    polys = [Feature(_box(*rc), {"region_id": k}) for k, rc in SYN_REGIONS.items()]
    gpkg = write_gpkg(polys, tmp / "regions.gpkg", SYN_GRID.crs)
    return {"items": items, "dem": dem, "seg": seg, "regions": gpkg}


def _argv(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "--regions",
        str(world["regions"]),
        "--date",
        "2023-06-10",
        "--items",
        str(world["items"]),
        "--dem",
        str(world["dem"]),
        "--imagery-model",
        str(world["seg"]),
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        "--runtime",
        "torch",
        *extra,
    ]


def test_change_evidence_on_the_synthetic_event_world(world, tmp_path: Path, tracking_uri: str, capsys) -> None:
    out = tmp_path / "out"
    assert run_main(assess.main, [*_argv(world, out, "--event-date", EVENT, "--json")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["change"] == {
        "slide": "change",
        "cloud": "unknown: no clear observation",
        "field": "no change",
        "slope": "no change",
    }
    assert summary["decisions"] == {"slide": 1, "cloud": "unknown", "field": 0, "slope": 0}
    rows = {
        f["properties"]["region_id"]: f["properties"]
        for f in json.loads((out / "regions.geojson").read_text())["features"]
    }
    slide = rows["slide"]
    assert slide["evidence"] == "imagery_only+change" and slide["chg_flagged_share"] > 0.9
    assert slide["chg_dndvi_slope"] < -0.3 and slide["chg_clear_pre"] == 2 and slide["chg_clear_post"] == 1
    assert "change: vegetation loss on slopes" in slide["reason"]
    cloud = rows["cloud"]  # no clear post observation: unknown, never "no change"
    assert cloud["chg_observed_share"] == 0 and cloud["chg_clear_post"] == 0 and cloud["decision"] is None
    assert "unknown: no clear observation" in cloud["reason"] and "no change" not in cloud["reason"]
    assert rows["field"]["chg_flagged_share"] == 0  # vegetation loss on flat ground: harvest, not flagged
    report = json.loads((out / "report.json").read_text())
    assert report["change"]["event_date"] == EVENT and report["change"]["acquisitions"]["post"] == ["2023-05-25"]
    assert report["change"]["windows"]["pre"] == ["2023-02-15", "2023-05-15"]  # the 90-day default of map_event
    html = (out / "report.html").read_text()
    assert "<dt>change evidence</dt>" in html and "flagged share (change)" in html
    assert "1 region(s) without change evidence (unknown: no clear observation): cloud" in html


def test_without_event_date_no_change_evidence(world, tmp_path: Path, tracking_uri: str) -> None:
    out = tmp_path / "out"
    assert run_main(assess.main, _argv(world, out)) == 0
    props = json.loads((out / "regions.geojson").read_text())["features"][0]["properties"]
    assert "change" not in props and not any(k.startswith("chg_") for k in props)
    assert "change" not in json.loads((out / "report.json").read_text())
    assert "<dt>change evidence</dt>" not in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--event-date", (date.today() + timedelta(days=3)).isoformat()], "is in the future"),
        (["--event-date", "2015-01-01"], "no Sentinel-2 imagery before 2015-06-23"),
        (["--event-date", "2023-06-10"], "expected a date before --date 2023-06-10"),
        (["--event-date", EVENT, "--pre-days", "5"], "in the pre-event window 2023-05-11..2023-05-15"),
        (["--event-date", "2023-06-01"], "in the post-event window 2023-06-02..2023-06-10"),
    ],
)
def test_bad_event_input_is_one_line(
    world, extra: list[str], message: str, tmp_path: Path, tracking_uri: str, capsys
) -> None:
    out = tmp_path / "out"
    assert run_main(assess.main, [*_argv(world, out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name != "mlruns"]


def test_event_date_needs_a_dem_and_a_time_series(world, tmp_path: Path, tracking_uri: str, capsys) -> None:
    argv = _argv(world, tmp_path / "out", "--event-date", EVENT)
    no_dem = [a for i, a in enumerate(argv) if a != "--dem" and argv[i - 1] != "--dem"]
    assert run_main(assess.main, no_dem) == 2
    assert "--event-date needs --dem" in capsys.readouterr().err
    scene = [("--scene" if a == "--items" else a) for a in argv]
    assert run_main(assess.main, scene) == 2
    assert "give --items or --stac-url, not --scene" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ the real patch
@pytest.fixture(scope="module")
def sen12(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from scipy import ndimage

    from common.geo import polygonize
    from imagery.data.sen12landslides import Sen12LandslidesS2

    path = shared_dataset("sen12landslides_italy_4120") / "italy_s2_4120.nc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        patch = Sen12LandslidesS2()(path)
    tmp = tmp_path_factory.mktemp("sen12")
    items, dem, _mask = write_items(patch, tmp / "items")
    labels, _n = ndimage.label(patch.mask)
    sizes = np.bincount(labels.ravel())
    # two of the mapped landslides far enough (200 m) from the patch's edges for the scene's margin
    inner = [k for k in range(1, len(sizes)) if _inside(labels == k, 21)]
    keep = sorted(inner, key=lambda k: -sizes[k])[:2]
    slides = shapely.union_all([f.geometry for f in polygonize(np.isin(labels, keep).astype(np.uint8), patch.grid)])
    off = _box(slice(40, 68), slice(24, 60), patch.grid)  # no mapped landslide there
    assert not patch.mask[40:68, 24:60].any()
    regions = [Feature(slides, {"region_id": "slides"}), Feature(off, {"region_id": "off"})]
    gpkg = write_gpkg(regions, tmp / "regions.gpkg", patch.grid.crs)
    seg = tiny_model(tmp / "seg", ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12"], prob=1e-6)
    return {"items": items, "dem": dem, "regions": gpkg, "seg": seg, "grid": patch.grid}


def _inside(mask: np.ndarray, margin: int) -> bool:
    rows, cols = np.nonzero(mask)
    n = mask.shape[0]
    return bool(rows.min() >= margin and cols.min() >= margin and rows.max() < n - margin and cols.max() < n - margin)


@pytest.mark.real_data
def test_change_evidence_on_the_real_sen12_patch(sen12, tmp_path: Path, tracking_uri: str, capsys) -> None:
    out = tmp_path / "out"
    argv = ["--regions", str(sen12["regions"]), "--date", "2023-09-24", "--event-date", EVENT]
    argv += ["--pre-days", "240", "--post-days", "130", "--items", str(sen12["items"]), "--dem", str(sen12["dem"])]
    argv += ["--imagery-model", str(sen12["seg"]), "--out", str(out), "--no-progress", "--device", "cpu"]
    t0 = time.perf_counter()
    assert run_main(assess.main, [*argv, "--runtime", "torch", "--json"]) == 0
    seconds = time.perf_counter() - t0
    rows = {p["region_id"]: p for p in json.loads((out / "report.json").read_text())["regions"]}
    on, off = rows["slides"], rows["off"]
    print(
        f"\nSen12Landslides italy_4120, assess --event-date {EVENT} in {seconds:.1f} s: over the landslides "
        f"{on['change']} (flagged {on['chg_flagged_share']:.3f}, dNDVI on slopes {on['chg_dndvi_slope']:+.3f}, "
        f"clear views {on['chg_clear_pre']:.0f}/{on['chg_clear_post']:.0f}, decision {on['decision']}); off them "
        f"{off['change']} (flagged {off['chg_flagged_share']:.3f}, decision {off['decision']})"
    )
    assert on["change"] == "change" and on["chg_flagged_share"] > 0.25 and on["decision"] == 1
    assert "change: vegetation loss on slopes" in on["reason"]
    assert off["change"] == "no change" and off["chg_flagged_share"] < 0.05 and off["decision"] == 0
    assert on["chg_observed_share"] > 0.9 and off["chg_observed_share"] > 0.9


# ------------------------------------------------------------------------------------------------ the service
def _service(world: dict[str, Path], tmp_path: Path, **cfg: Any):
    from fastapi.testclient import TestClient

    from imagery.inference import load_segmenter
    from service.api import create_app
    from service.config import ServiceConfig

    root = tmp_path / "scenes"
    shutil.copytree(world["items"].parent, root)
    config = ServiceConfig(
        workdir=str(tmp_path / "jobs"), scenes_root=str(root), dem=str(world["dem"]), runtime="torch", **cfg
    )
    models = (None, load_segmenter(str(world["seg"]), device="cpu", runtime="torch"), None)
    return TestClient(create_app(config, models=models)), root


def _wait(client: Any, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        state = client.get(f"/v1/jobs/{job_id}").json()
        if state["status"] in ("done", "failed", "interrupted"):
            return state
        time.sleep(0.1)
    raise AssertionError("job did not finish")


def _geojson(rows: slice, cols: slice) -> dict[str, Any]:
    return shapely.geometry.mapping(transform_geometries(_box(rows, cols), SYN_GRID.crs, "EPSG:4326"))


def _bbox(rows: slice, cols: slice) -> list[float]:
    return list(transform_geometries(_box(rows, cols), SYN_GRID.crs, "EPSG:4326").bounds)


def test_service_assess_with_event_date(world, tmp_path: Path) -> None:
    client, root = _service(world, tmp_path)
    region = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": _geojson(*SYN_REGIONS[k]), "properties": {"id": k}}
            for k in ("slide", "cloud")
        ],
    }
    body = {"region": region, "date": "2023-06-10", "event_date": EVENT, "scene": "items.json"}
    r = client.post("/v1/assess", json=body)
    assert r.status_code == 202, r.text
    state = _wait(client, r.json()["job_id"])
    assert state["status"] == "done", state
    props = {f["properties"]["region_id"]: f["properties"] for f in state["result"]["regions"]["features"]}
    assert props["slide"]["change"] == "change" and props["slide"]["decision"] == 1
    assert props["cloud"]["change"] == "unknown: no clear observation"
    assert state["result"]["change"]["acquisitions"]["pre"] == ["2023-04-20", "2023-05-05"]
    html = client.get(state["files"]["report.html"]).text
    assert "<dt>change evidence</dt>" in html and "vegetation loss on slopes" in html
    report = client.get(state["files"]["report.json"]).json()
    assert report["regions"][0]["change_reason"]


def test_service_event_date_errors(world, tmp_path: Path) -> None:
    client, root = _service(world, tmp_path)
    base = {"bbox": _bbox(*SYN_REGIONS["slope"]), "date": "2023-06-10", "scene": "items.json"}
    future = (date.today() + timedelta(days=2)).isoformat()
    for event, message in ((future, "in the future"), ("2015-06-01", "no Sentinel-2 imagery before 2015-06-23")):
        r = client.post("/v1/assess", json={**base, "event_date": event})
        assert r.status_code == 422 and message in r.json()["error"] and "\n" not in r.json()["error"], r.text
    r = client.post("/v1/assess", json={**base, "event_date": "2023-06-10"})
    assert r.status_code == 400 and "event_date 2023-06-10: expected a date before" in r.json()["error"]
    r = client.post("/v1/assess", json={**base, "event_date": EVENT, "pre_days": 0})
    assert r.status_code == 422 and "pre_days" in r.json()["error"]
    form = {
        "bands": "B4,B3,B2",
        "date": "2023-06-10",
        "event_date": EVENT,
        "region": json.dumps(_geojson(*SYN_REGIONS["slope"])),
    }
    r = client.post("/v1/assess/upload", data=form, files={"scene": ("s.tif", b"x")})
    assert r.status_code == 400 and "not an upload" in r.json()["error"], r.text
    r = client.post("/v1/assess/upload", data={**form, "event_date": future}, files={"scene": ("s.tif", b"x")})
    assert r.status_code == 422 and "in the future" in r.json()["error"], r.text
    from common.cli import UserError
    from service.assess import Assessor
    from service.config import ServiceConfig

    no_dem = Assessor(ServiceConfig(scenes_root=str(root)), (None, None, None))
    with pytest.raises(UserError, match="this service has no DEM"):
        no_dem.check({**base, "event_date": EVENT})
    (root / "one").mkdir()
    r = client.post("/v1/assess", json={**base, "scene": "one", "event_date": EVENT})
    assert r.status_code == 400 and "scene 'one' has one date" in r.json()["error"]
    r = client.post("/v1/assess", json={**base, "event_date": EVENT, "pre_days": 5})  # no item before: a failed job
    state = _wait(client, r.json()["job_id"])
    assert state["status"] == "failed" and "pre-event window" in state["message"]
    assert str(tmp_path) not in state["message"] and "--" not in state["message"]  # request fields, no server paths


def test_service_change_reads_stay_in_the_scenes_folder(world, tmp_path: Path) -> None:
    """The pre-event items of a saved collection point outside the scenes folder: the job fails without reading
    them and without naming the path (the change evidence reads under the same rules as the scene)."""
    client, root = _service(world, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    data = json.loads((root / "items.json").read_text())
    for item in data["features"]:
        if item["properties"]["datetime"] < EVENT:
            for asset in item["assets"].values():
                shutil.copy(root / asset["href"], outside / asset["href"])
                asset["href"] = str(outside / asset["href"])
    (root / "items.json").write_text(json.dumps(data))
    body = {"bbox": _bbox(*SYN_REGIONS["slope"]), "date": "2023-06-10", "event_date": EVENT}
    r = client.post("/v1/assess", json={**body, "scene": "items.json"})
    assert r.status_code == 202, r.text
    state = _wait(client, r.json()["job_id"])
    assert state["status"] == "failed", state
    assert "not allowed" in state["message"] or "refused" in state["message"], state["message"]
    assert str(outside) not in state["message"] and "elsewhere" not in state["message"], state["message"]


def test_change_reads_never_reuse_a_reader_opened_elsewhere(world, tmp_path: Path) -> None:
    """Band readers the compositing keeps open (per process) are not reused by a job whose sources do not allow
    their files: every reader of a change computation is opened, and checked, inside the job's own reads."""
    from common.cli import UserError
    from common.geo import ClientSources, client_reads
    from imagery.change.acquisition import output_grid, select_observations
    from imagery.change.composite import close_readers, composite_block
    from imagery.change.region import region_change_features
    from imagery.data.stac import load_items

    geom = transform_geometries(_box(*SYN_REGIONS["slope"]), SYN_GRID.crs, "EPSG:4326")
    windows = select_observations(load_items(world["items"]), geom.bounds, date(2023, 5, 16), 90, 45)
    grid = output_grid(geom.bounds)  # the grid the region computation uses
    for obs in (windows.pre, windows.post):
        composite_block(obs, grid, grid.full_window())  # readers left open, unchecked
    elsewhere = ClientSources(roots=(str(tmp_path),))
    try:
        with pytest.raises(UserError):
            region_change_features(windows, [geom], str(world["dem"]), reads=lambda: client_reads(elsewhere))
        rows, _grid = region_change_features(windows, [geom], str(world["dem"]))  # the same, allowed: measured
        assert rows[0]["chg_observed_share"] > 0.9 and rows[0]["chg_flagged_share"] == 0
    finally:
        close_readers()


# ------------------------------------------------------------------------------- the change evidence's cloud limit
def test_change_max_cloud_default_is_declared_once() -> None:
    from imagery.change.defaults import MAX_CLOUD
    from pipelines import map_event
    from service.api import AssessRequest
    from service.config import AssessConfig

    o = assess.COMMAND.parse(["--date", "2023-06-10", "--out", "o"])
    m = map_event.COMMAND.parse(["--bbox", "0", "0", "1", "1", "--event-date", EVENT, "--out", "o"])
    request = AssessRequest(date="2023-06-10")
    assert o.change.change_max_cloud == m.max_cloud == request.change_max_cloud == AssessConfig().change_max_cloud
    assert MAX_CLOUD == m.max_cloud


def test_change_max_cloud_reaches_the_acquisition(world, tmp_path: Path, tracking_uri: str, capsys) -> None:
    """The synthetic items have 20 % cloud cover: a limit of 10 % leaves no item before the event (a FAILED run
    naming the flag); 20 % keeps them (the library config carries it); out of 0-100 is refused before any run."""
    import mlflow

    argv = _argv(world, tmp_path / "out", "--event-date", EVENT)
    cfg = assess.config_from_args(assess.COMMAND.parse([*argv, "--change-max-cloud", "20"]))
    assert cfg.change_max_cloud == 20.0
    assert run_main(assess.main, [*argv, "--change-max-cloud", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(cloud cover <= 10%)" in err and "raise --change-max-cloud" in err, err
    assert [r.info.status for r in mlflow.search_runs(search_all_experiments=True, output_format="list")] == ["FAILED"]
    for bad in ("150", "-1"):
        assert run_main(assess.main, [*argv, "--change-max-cloud", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--change-max-cloud {bad}: expected a cloud cover in percent" in err, err
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 1  # no run for those
    assert not (tmp_path / "out").exists()


def test_service_change_max_cloud(world, tmp_path: Path) -> None:
    client, _root = _service(world, tmp_path)
    base = {"bbox": _bbox(*SYN_REGIONS["slope"]), "date": "2023-06-10", "scene": "items.json", "event_date": EVENT}
    for bad in (150, -1, "lots"):
        r = client.post("/v1/assess", json={**base, "change_max_cloud": bad})
        assert r.status_code == 422 and "change_max_cloud" in r.json()["error"], r.text
    r = client.post("/v1/assess", json={**base, "change_max_cloud": 10})  # the items have 20 %: none is kept
    assert r.status_code == 202, r.text
    state = _wait(client, r.json()["job_id"])
    assert state["status"] == "failed" and "(cloud cover <= 10%)" in state["message"], state
    assert "raise change_max_cloud" in state["message"] and "--" not in state["message"]
