"""map_event against issue 20's checklist: the inputs planned once, every output as the issue lists it, and the
bad-input list (one line, exit 2, nothing left behind, no run or a FAILED one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from common.cli import run_main
from pipelines import map_event
from tests.change.helpers import SYN_EVENT, SYN_GRID, lonlat_box, map_event_argv, write_synthetic_items

EVENT = SYN_EVENT


def _argv(items: Path, dem: Path, out: Path, *extra: str) -> list[str]:
    return map_event_argv(items, dem, out, *extra)


def _aoi(tmp_path: Path) -> Path:
    import shapely

    from common.geo import Feature, transform_geometries, write_gpkg

    box = transform_geometries(shapely.box(*lonlat_box(SYN_GRID, inset_m=60.0)), "EPSG:4326", "EPSG:3857")
    return write_gpkg([Feature(box, {"name": "area"})], tmp_path / "aoi.gpkg", "EPSG:3857")


def _runs() -> list:
    import mlflow

    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def _one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


def _nothing_left(tmp_path: Path, out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())
    assert not list(tmp_path.glob(f".{out.name}*"))  # no staging folder, block cache or fetched DEM


def test_inputs_planned_once_and_every_output_of_the_issue(
    world, tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One plan (one read of --aoi) before the run opens, passed into the run; then the issue's output list."""
    import numpy as np
    import rasterio

    import common.geo
    import imagery.data.stac

    items, dem = world
    calls = {"plan": 0, "read_vector": 0, "load_items": 0}

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return wrapper

    monkeypatch.setattr(map_event, "plan", counted("plan", map_event.plan))
    monkeypatch.setattr(common.geo, "read_vector", counted("read_vector", common.geo.read_vector))
    monkeypatch.setattr(imagery.data.stac, "load_items", counted("load_items", imagery.data.stac.load_items))
    out = tmp_path / "out"
    argv = _argv(items, dem, out)
    i = argv.index("--bbox")
    argv[i : i + 5] = ["--aoi", str(_aoi(tmp_path))]
    assert map_event.main(argv) == 0
    assert calls == {"plan": 1, "read_vector": 1, "load_items": 1}

    # pre.tif / post.tif: COGs with band descriptions and a clear-count band; change.tif's four layers;
    # probability.tif float32 with NaN nodata; all on one grid
    grids = set()
    for name, bands in (
        ("pre.tif", ("B2", "B3", "B4", "B8", "B11", "NDVI", "BSI", "clear_count")),
        ("post.tif", ("B2", "B3", "B4", "B8", "B11", "NDVI", "BSI", "clear_count")),
        ("change.tif", ("dNDVI", "rdNDVI", "dBSI", "slope_deg")),
        ("probability.tif", ("probability",)),
    ):
        with rasterio.open(out / name) as ds:
            assert ds.descriptions == bands, name
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", name
            assert ds.crs is not None and set(ds.dtypes) == {"float32"} and np.isnan(ds.nodata), name
            grids.add((ds.crs.to_string(), tuple(ds.transform), ds.width, ds.height))
            if name == "post.tif":
                assert np.nanmax(ds.read(8)) == 2  # the clear count: two post dates
    assert len(grids) == 1

    # the inventory's columns, in both files; the area geodesic
    import pyogrio
    import shapely

    from common.geo import geodesic_area_m2

    columns = {"id", "area_m2", "confidence", "mean_dndvi", "mean_slope_deg", "evidence", "reason", "pre_dates",
               "post_dates", "clear_obs_pre", "clear_obs_post"}  # fmt: skip
    gj = json.loads((out / "landslides.geojson").read_text())["features"]
    assert gj and columns <= set(gj[0]["properties"])
    assert gj[0]["properties"]["pre_dates"] == "2023-04-20,2023-05-05"
    geom = shapely.geometry.shape(gj[0]["geometry"])
    assert gj[0]["properties"]["area_m2"] == pytest.approx(geodesic_area_m2(geom, "EPSG:4326"), rel=1e-3)
    info = pyogrio.read_info(out / "landslides.gpkg", layer="landslides")
    assert columns - {"id"} <= set(info["fields"]) and info["crs"] == SYN_GRID.crs

    # summary.json: items per window with ids and dates, cloud shares, tiles skipped, counts, area, timings
    s = json.loads((out / "summary.json").read_text())
    assert [(it["id"], it["date"], it["cloud_cover"]) for it in s["items"]["pre"]] == [
        ("SYN_0", "2023-04-20", 20.0),
        ("SYN_1", "2023-05-05", 20.0),
    ]
    assert set(s["unobserved_share"]) == {"pre", "post"} and s["n_landslides"] == len(gj) == 1
    assert s["detected_area_m2"] > 0 and s["area_km2"] > 0 and s["timings"]["total_s"] > 0
    assert "no --imagery-model" in s["segmenter"]  # no model: no tiles to skip, and it says so

    # report.html: one offline file; before/after side by side, a legend, the table by confidence, the summary
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) and "<script" not in html
    assert html.count('src="data:image/png;base64,') == 2 and 'alt="before"' in html and 'alt="after"' in html
    assert "legend" in html and "Inventory (by confidence)" in html and "<h2>Summary</h2>" in html


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--max-cloud", "150"], ("--max-cloud 150", "0 to 100")),
        (["--max-cloud", "-1"], ("--max-cloud -1", "0 to 100")),
        (["--min-area-m2", "-5"], ("--min-area-m2 -5",)),
        (["--max-area-km2", "0"], ("--max-area-km2 0", "positive")),
        (["--stac-timeout", "0"], ("--stac-timeout 0",)),
        (["--scheduler", "tcp://127.0.0.1:1"], ("--scheduler", "--engine dask")),
        (["--items", "missing.json"], ("--items missing.json", "file not found")),
        (["--aoi", "missing.gpkg"], ("--aoi missing.gpkg", "file not found")),
    ],
)
def test_bad_flags_are_refused_before_a_run_opens(
    extra: list[str], words: tuple[str, ...], world, tmp_path: Path, tracking_uri: str, capsys
) -> None:
    items, dem = world
    out = tmp_path / "out"
    argv = _argv(items, dem, out)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag == "--aoi":
            i = argv.index("--bbox")
            argv[i : i + 5] = [flag, value]
        elif flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert run_main(map_event.main, argv) == 2
    _one_line(capsys, *words)
    assert _runs() == []
    _nothing_left(tmp_path, out)


def _cop_dem_item(tmp_path: Path) -> dict:
    """A cop-dem-glo-30 item (lon/lat grid, flat) well beyond the synthetic world."""
    import numpy as np
    import shapely

    from common.geo import Grid, transform_geometries, write_cog

    w, s, e, n = transform_geometries(shapely.box(*SYN_GRID.bounds), SYN_GRID.crs, "EPSG:4326").buffer(0.01).bounds
    grid = Grid.from_bounds((w, s, e, n), "EPSG:4326", 1 / 3600)
    write_cog(tmp_path / "cop.tif", np.full(grid.shape, 100.0, np.float32), grid, nodata=np.nan)
    return {
        "type": "Feature",
        "id": "Copernicus_DSM_test",
        "collection": "cop-dem-glo-30",
        "geometry": shapely.geometry.mapping(shapely.box(w, s, e, n)),
        "bbox": [w, s, e, n],
        "properties": {"datetime": "2021-04-22T00:00:00Z"},
        "assets": {"data": {"href": str(tmp_path / "cop.tif"), "roles": ["data"]}},
    }


@pytest.mark.parametrize("case", ["no_pre", "no_post", "stac_fails", "dem_collection_no_post"])
def test_bad_input_in_the_run_marks_it_failed(case: str, world, tmp_path: Path, tracking_uri: str, capsys) -> None:
    """One line, exit 2, the run FAILED and nothing left behind (with --dem-collection: no fetched DEM either)."""
    from tests.scenes.stac_server import StacServer

    items, dem = world
    out = tmp_path / "out"
    argv = _argv(items, dem, out)
    if case == "no_pre":
        assert run_main(map_event.main, [*argv, "--pre-days", "5"]) == 2
        _one_line(capsys, "pre-event window 2023-05-11..2023-05-15", "widen --pre-days or raise --max-cloud")
    elif case == "no_post":
        assert run_main(map_event.main, [*argv, "--post-days", "5"]) == 2
        _one_line(capsys, "post-event window 2023-05-17..2023-05-21", "widen --post-days")
    elif case == "dem_collection_no_post":
        data = json.loads(items.read_text())["features"]
        for it in data:  # a STAC API serves absolute hrefs
            for asset in it["assets"].values():
                asset["href"] = str(items.parent / asset["href"])
        i = argv.index("--items")
        argv[i : i + 2] = ["--post-days", "5"]
        j = argv.index("--dem")
        argv[j : j + 2] = ["--dem-collection", "cop-dem-glo-30"]
        with StacServer({"sentinel-2-l2a": data, "cop-dem-glo-30": [_cop_dem_item(tmp_path)]}) as url:
            assert run_main(map_event.main, [*argv, "--stac-url", url]) == 2
        _one_line(capsys, "post-event window 2023-05-17..2023-05-21")
    else:  # an API answering 500 to every request: one line naming it
        i = argv.index("--items")
        with StacServer({"sentinel-2-l2a": []}, status=500) as url:
            argv[i : i + 2] = ["--stac-url", url, "--stac-timeout", "5"]
            assert run_main(map_event.main, argv) == 2
        _one_line(capsys, "STAC API", url)
    runs = _runs()
    assert [r.info.status for r in runs] == ["FAILED"]
    _nothing_left(tmp_path, out)


def test_event_before_sentinel2_is_refused_before_a_run_opens(world, tmp_path: Path, tracking_uri: str, capsys) -> None:
    items, dem = world
    out = tmp_path / "out"
    argv = _argv(items, dem, out)
    argv[argv.index("--event-date") + 1] = "2014-08-01"
    assert run_main(map_event.main, argv) == 2
    _one_line(capsys, "--event-date 2014-08-01", "no Sentinel-2 imagery before 2015-06-23")
    assert _runs() == []
    _nothing_left(tmp_path, out)


def test_no_post_event_scene_yet_names_the_next_acquisition(world, tmp_path: Path, tracking_uri: str, capsys) -> None:
    """An event a few days ago with only older items: the error names the latest item's date + 5 days (revisit)."""
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    latest = today - dt.timedelta(days=4)
    items, dem = write_synthetic_items(tmp_path / "recent", pre_dates=(str(latest),), post_dates=())
    out = tmp_path / "out"
    argv = _argv(items, dem, out)
    argv[argv.index("--event-date") + 1] = str(today - dt.timedelta(days=2))
    assert run_main(map_event.main, argv) == 2
    expected = latest + dt.timedelta(days=5)
    _one_line(capsys, f"latest item over the area is from {latest}", f"expected around {expected}")
    assert [r.info.status for r in _runs()] == ["FAILED"]
    _nothing_left(tmp_path, out)
