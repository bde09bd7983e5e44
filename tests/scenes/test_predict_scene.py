"""Windowed scene prediction: the real 29RKH tile end to end, synthetic scenes with a DEM, and bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine

from common.cli import UserError, run_main
from common.geo import Grid, RasterOnGrid
from fusion.demo.synthetic_scene import write_synthetic_scene
from imagery.data.sentinel2 import open_scene
from imagery.inference.config import SceneConfig
from imagery.inference.predict import predict_scene, tile_starts
from imagery.inference.scene import RollingStrips, _StripReader, plan_inputs, run_scene
from pipelines.predict_scene import main
from tests.conftest import shared_dataset
from tests.scenes.helpers import L2A_BANDS, RuleSegmenter, copy_scene, local_29rkh_item, tiny_model, write_tif


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_scene(tmp_path_factory.mktemp("syn") / "scene", 300, scar_density=1.0, cloud_fraction=0.0)


@pytest.fixture(scope="module")
def l2a_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("m") / "l2a", L2A_BANDS)


def _cli(args: list[str], tracking_uri: str) -> int:
    return run_main(main, [*args, "--tracking-uri", tracking_uri, "--no-progress"])


@pytest.mark.real_data
def test_real_scene_end_to_end(tmp_path: Path, tracking_uri: str, l2a_model: Path, capsys) -> None:
    """The real L2A tile (12 bands at 100/200/600 m + SCL) predicted whole through the CLI."""
    src = shared_dataset("sentinel2_l2a_cogs_29RKH")
    out = tmp_path / "out"
    argv = ["--scene", str(src), "--model", str(l2a_model), "--out", str(out), "--tile", "256"]
    assert _cli([*argv, "--allow-resolution-mismatch"], tracking_uri) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "probability.tif",
            "mask.tif",
            "probability.qml",
            "mask.qml",
            "landslides.geojson",
            "landslides.gpkg",
            "overview.png",
            "summary.json",
        ]
    )
    finest = Grid.from_raster(src / "B02.tif")
    for name, dtype, nodata in (("probability.tif", "float32", None), ("mask.tif", "uint8", 255)):
        with rasterio.open(out / name) as ds:
            assert Grid(ds.crs, ds.transform, ds.width, ds.height) == finest  # the finest band grid, 100 m here
            assert ds.dtypes[0] == dtype and ds.overviews(1)  # a COG with overviews
            assert nodata is None or ds.nodata == nodata
            data = ds.read(1)
    with rasterio.open(out / "probability.tif") as ds:
        prob = ds.read(1)
    # SCL-masked pixels (clouds and cirrus: ~4% of this tile) are nodata in both outputs, never "no landslide"
    scl = RasterOnGrid(src / "SCL.tif", finest, "nearest", bands=1)
    with scl:
        classes = scl.read()
    masked = np.isin(classes, [0, 1, 3, 8, 9, 10, 11])
    np.testing.assert_array_equal(data == 255, masked)
    np.testing.assert_array_equal(np.isnan(prob), masked)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["masked_share"] == pytest.approx(masked.mean()) and 0.03 < summary["masked_share"] < 0.06
    assert summary["crs"] == "EPSG:32629" and summary["width"] == 1098 and summary["date"] == "2020-02-19"
    assert summary["bands_used"] == L2A_BANDS and summary["landslide_count"] == 0  # the test model says "no"
    for vec, crs in (("landslides.geojson", "EPSG:4326"), ("landslides.gpkg", "EPSG:32629")):
        assert pyogrio.read_info(out / vec)["crs"] == crs
    assert "0 landslide polygon(s)" in capsys.readouterr().out
    run = mlflow.search_runs(experiment_names=["imagery-scene"], output_format="list")[0]
    assert run.info.status == "FINISHED"
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"overview.png", "summary.json", "landslides.geojson", "probability.tif"} <= arts


@pytest.mark.real_data
def test_real_scene_through_stac_item_finds_polygons(tmp_path: Path) -> None:
    """The same tile read through its STAC item, with a rule 'model' (bright red = landslide)."""
    seg = RuleSegmenter(L2A_BANDS, red_min=0.45)
    cfg = SceneConfig(
        scene=str(local_29rkh_item(tmp_path)),
        model_uri="rule",
        out=str(tmp_path / "o"),
        progress=False,
        tile=256,
        min_area_m2=20000,
        allow_resolution_mismatch=True,
    )
    res = run_scene(cfg, segmenter=seg, log=lambda _: None)
    s = res.summary
    assert s["scene_kind"] == "stac-item" and s["landslide_count"] > 0
    info = pyogrio.read_info(res.paths["landslides.gpkg"], layer="landslides")
    assert info["features"] == s["landslide_count"]
    with rasterio.open(res.paths["mask.tif"]) as ds:
        mask = ds.read(1)
    assert s["landslide_pixels"] == int((mask == 1).sum())
    # every polygon is at least --min-area-m2 and areas are true m2: 100 m pixels are 1e4 m2 each
    meta, _, _, fields = pyogrio.raw.read(res.paths["landslides.gpkg"], layer="landslides")
    area = fields[list(meta["fields"]).index("area_m2")]
    npx = fields[list(meta["fields"]).index("n_pixels")]
    assert area.min() >= 20000 and np.allclose(area, npx * 1e4, rtol=0.01)


def test_synthetic_scene_with_geographic_dem(synthetic: Path, tmp_path: Path) -> None:
    """10/20/60 m bands, SCL and a DEM in EPSG:4326: scars found as polygons of the right size."""
    bands = ["B2", "B3", "B4", "B8", "B11", "B12", "slope", "DEM"]
    seg = RuleSegmenter(bands)
    cfg = SceneConfig(
        scene=str(synthetic),
        model_uri="rule",
        out=str(tmp_path / "o"),
        dem=str(synthetic / "dem.tif"),
        progress=False,
        tile=64,
        overlap=16,
        batch_size=5,
        min_area_m2=0,
    )
    res = run_scene(cfg, segmenter=seg, log=lambda _: None)
    s = res.summary
    assert s["dem_resampling"] == "bilinear" and s["masked_share"] == 0 and s["landslide_count"] >= 1
    assert s["rows_read"] == s["height"]  # every row read once, though the tiles overlap by 16 px
    busy, t = s["model_busy"], s["timings_s"]
    assert 0 < busy["predict_share"] <= 1 and 0 <= busy["read_wait_share"] < 1  # the model's share of the loop
    slack = 0.0011 / t["loop_s"] + 1e-3  # timings_s are rounded to 1 ms
    assert (
        busy["predict_share"] == pytest.approx(t["predict_s"] / t["loop_s"], abs=slack) and t["loop_s"] <= t["total_s"]
    )
    # the windowed result equals the in-memory baseline on the same inputs
    with rasterio.open(res.paths["probability.tif"]) as ds:
        windowed = ds.read(1)
    inp = plan_inputs(open_scene(synthetic), seg, cfg, lambda _: None)
    with _StripReader(inp, cfg) as reader:
        raw, _, _ = reader.read(0, inp.grid.height)
    baseline = predict_scene(lambda b: seg.predict(b)["prob"], raw, tile=64, overlap=16, batch_size=5)
    np.testing.assert_allclose(windowed, baseline, atol=1e-6)


def test_the_automatic_engine_is_chosen_for_the_run_s_tiles(synthetic: Path, tmp_path: Path, monkeypatch) -> None:
    """``--runtime auto`` measures once the run's tiles are known (a long run also tries torch.compile), after
    every check: a refused run measures nothing."""
    from imagery.inference import scene as scene_mod

    calls: list[int | None] = []
    real = scene_mod.apply_engine

    def spy(seg, spec="auto", **kw):
        calls.append(kw.get("workload"))
        return real(seg, spec, **kw)

    monkeypatch.setattr(scene_mod, "apply_engine", spy)
    model = tiny_model(tmp_path / "m", ["B2", "B3", "B4", "B8"])
    cfg = SceneConfig(scene=str(synthetic), model_uri=str(model), out=str(tmp_path / "o"), progress=False)
    res = run_scene(cfg, log=lambda _: None)
    n = len(tile_starts(300, cfg.tile, cfg.overlap)) ** 2
    assert calls == [n] and res.summary["tiles"]["total"] == n and res.summary["engine"]["path"] == "torch-fp32"
    coarse = tiny_model(tmp_path / "m60", ["B2", "B3", "B4", "B8"], gsd_m=60.0)  # refused: the scene is at 10 m
    with pytest.raises(UserError, match="resolution"):
        run_scene(SceneConfig(scene=str(synthetic), model_uri=str(coarse), out=str(tmp_path / "o2")), log=print)
    assert calls == [n]


def test_rolling_strips_equal_direct_reads_bit_for_bit(synthetic: Path, tmp_path: Path) -> None:
    """Overlapping strips joined from the rows already read equal the strips read whole (bands, reasons,
    water, slope from a DEM in EPSG:4326), with each row read once."""
    bands = ["B2", "B4", "B8", "B11", "slope", "DEM"]
    cfg = SceneConfig(scene=str(synthetic), model_uri="rule", out=str(tmp_path / "o"), dem=str(synthetic / "dem.tif"))
    inp = plan_inputs(open_scene(synthetic), RuleSegmenter(bands), cfg, lambda _: None)
    height = inp.grid.height
    with _StripReader(inp, cfg) as reader:
        strips = RollingStrips(reader.read)
        for y in tile_starts(height, 128, 64):  # the last start is pulled back to fit: an irregular overlap
            rows = min(128, height - y)
            got, want = strips(y, rows), reader.read(y, rows)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            assert got[2].keys() == want[2].keys() and got[2]["slope"] is not None
            for name, arr in want[2].items():
                np.testing.assert_array_equal(got[2][name], arr)
        assert strips.rows_read == height


def test_rolling_strips_read_only_new_rows() -> None:
    reads: list[tuple[int, int]] = []

    def read(row: int, rows: int):
        reads.append((row, rows))
        r = np.arange(row, row + rows, dtype=np.float32)
        return np.stack([r[:, None] * np.ones(3)] * 2), r.astype(np.uint8)[:, None].repeat(3, 1), {"water": None}

    strips = RollingStrips(read)
    for row, rows in [(0, 8), (4, 8), (8, 4), (20, 8), (22, 6), (22, 4)]:  # overlap, inside, gap, end, repeat
        raw, reason, terrain = strips(row, rows)
        assert raw.shape == (2, rows, 3) and terrain == {"water": None}
        np.testing.assert_array_equal(raw[0, :, 0], np.arange(row, row + rows))
        np.testing.assert_array_equal(reason[:, 1], np.arange(row, row + rows))
    assert reads == [(0, 8), (8, 4), (20, 8)] and strips.rows_read == 20


def test_slope_from_a_geographic_dem_equals_utm(tmp_path: Path) -> None:
    """A tilted plane: its DEM in EPSG:4326 and in UTM give the same slope on the scene grid."""
    from pyproj import Transformer

    scene = write_synthetic_scene(tmp_path / "s", 120, dem=False)
    a, b = 0.2, -0.1  # dz/dE, dz/dN: slope = atan(hypot) = 12.6 degrees
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32629", always_xy=True)
    left, bottom, right, top = Grid.from_raster(scene / "B02.tif").bounds_in("EPSG:4326")
    g4326 = Grid.from_bounds((left - 0.01, bottom - 0.01, right + 0.01, top + 0.01), "EPSG:4326", 1 / 3600)
    lon, lat = g4326.cell_centres()
    e, n = to_utm.transform(lon, lat)
    write_tif(
        tmp_path / "dem4326.tif",
        (a * (e - 200000) + b * (n - 2800000) + 3000).astype(np.float32),
        "EPSG:4326",
        g4326.transform,
    )
    gutm = Grid("EPSG:32629", Affine(30, 0, 199500, 0, -30, 2800500), 80, 80)
    e, n = gutm.cell_centres()
    write_tif(
        tmp_path / "demutm.tif",
        (a * (e - 200000) + b * (n - 2800000) + 3000).astype(np.float32),
        "EPSG:32629",
        gutm.transform,
    )
    seg = RuleSegmenter(["B4", "slope"])
    slopes = []
    for dem in ("dem4326.tif", "demutm.tif"):
        cfg = SceneConfig(scene=str(scene), model_uri="x", out="", dem=str(tmp_path / dem))
        inp = plan_inputs(open_scene(scene), seg, cfg, lambda _: None)
        with _StripReader(inp, cfg) as reader:
            raw, _, _ = reader.read(10, 100)
        slopes.append(raw[1, 5:-5, 5:-5] * 20.29228266)  # back to degrees
    expected = np.degrees(np.arctan(np.hypot(a, b)))
    for s in slopes:
        assert np.median(s) == pytest.approx(expected, abs=0.1)
    assert np.abs(slopes[0] - slopes[1]).max() < 0.3


# ----------------------------------------------------------------------------- bad input
def _fails(args: list[str], tracking_uri: str, capsys, match: str, out: Path) -> None:
    assert _cli([*args, "--out", str(out)], tracking_uri) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert match in err[0], err[0]
    assert not out.exists() or not [p for p in out.iterdir()], "no half-written outputs"
    run = mlflow.search_runs(experiment_names=["imagery-scene"], output_format="list")[0]
    assert run.info.status == "FAILED"


@pytest.mark.real_data
def test_bad_inputs_are_one_line_errors(tmp_path: Path, tracking_uri: str, l2a_model: Path, capsys) -> None:
    src = shared_dataset("sentinel2_l2a_cogs_29RKH")
    dem = shared_dataset("copernicus_dem_cog") / "Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"
    model = ["--model", str(l2a_model), "--allow-resolution-mismatch"]
    # a DEM that does not cover the scene names the covered share
    dem_model = tiny_model(tmp_path / "dem_model", ["B2", "B3", "B4", "B8", "slope"])
    _fails(
        ["--scene", str(src), "--model", str(dem_model), "--dem", str(dem)],
        tracking_uri,
        capsys,
        "covers 0.0% of the scene",
        tmp_path / "o1",
    )
    # a model with slope but no --dem
    _fails(
        ["--scene", str(src), "--model", str(dem_model)],
        tracking_uri,
        capsys,
        "include slope; pass --dem",
        tmp_path / "o2",
    )
    # a missing band file: named, with the bands found
    scene = copy_scene(tmp_path, "missing")
    (scene / "B05.tif").unlink()
    _fails(
        ["--scene", str(scene), *model],
        tracking_uri,
        capsys,
        "has no B5 file (found B1, B2, B3, B4, B6",
        tmp_path / "o3",
    )
    # a truncated raster
    scene = copy_scene(tmp_path, "truncated")
    data = (scene / "B04.tif").read_bytes()
    (scene / "B04.tif").write_bytes(data[: len(data) // 3])
    _fails(["--scene", str(scene), *model], tracking_uri, capsys, "B04.tif", tmp_path / "o4")
    # a band on another extent
    scene = copy_scene(tmp_path, "shifted")
    with rasterio.open(src / "B06.tif") as ds:
        arr, t, crs = ds.read(1), ds.transform, ds.crs
    write_tif(scene / "B06.tif", arr, crs, Affine(t.a, 0, t.c + 60000, 0, t.e, t.f), nodata=0)
    _fails(["--scene", str(scene), *model], tracking_uri, capsys, "band B6 of scene", tmp_path / "o5")
    # an all-cloud scene
    scene = copy_scene(tmp_path, "cloudy")
    with rasterio.open(src / "SCL.tif") as ds:
        arr, t, crs = ds.read(1), ds.transform, ds.crs
    write_tif(scene / "SCL.tif", np.full_like(arr, 9), crs, t, nodata=0)
    _fails(["--scene", str(scene), *model], tracking_uri, capsys, "every pixel is masked by SCL", tmp_path / "o6")
    # a model whose bands the scene lacks (B10 filling switched off)
    b10 = tiny_model(tmp_path / "b10", ["B2", "B3", "B4", "B10"])
    _fails(
        ["--scene", str(src), "--model", str(b10), "--no-fill-b10"],
        tracking_uri,
        capsys,
        "has no B10 file",
        tmp_path / "o7",
    )
    shutil.rmtree(tmp_path / "missing")


@pytest.mark.real_data
def test_b10_is_filled_with_a_warning(tmp_path: Path) -> None:
    seg = RuleSegmenter(["B2", "B3", "B4", "B10"])
    cfg = SceneConfig(
        scene=str(shared_dataset("sentinel2_l2a_cogs_29RKH")),
        model_uri="x",
        out=str(tmp_path / "o"),
        progress=False,
        tile=256,
        allow_resolution_mismatch=True,
    )
    with pytest.warns(UserWarning, match="needs B10"):
        res = run_scene(cfg, segmenter=seg, log=lambda _: None)
    assert res.summary["bands_filled"] == {"B10": 1.0}


@pytest.mark.real_data
def test_a_band_in_another_crs_is_reprojected(tmp_path: Path) -> None:
    from common.geo import reproject_to_cog

    scene = copy_scene(tmp_path, "mixed")
    grid = Grid.from_raster(scene / "B06.tif")
    reproject_to_cog(scene / "B06.tif", tmp_path / "b06_utm28.tif", grid.to_crs("EPSG:32628"))
    (tmp_path / "b06_utm28.tif").replace(scene / "B06.tif")
    seg = RuleSegmenter(["B2", "B3", "B4", "B6"], red_min=0.45)
    cfg = SceneConfig(
        scene=str(scene),
        model_uri="rule",
        out=str(tmp_path / "o"),
        progress=False,
        tile=256,
        allow_resolution_mismatch=True,
    )
    notes: list[str] = []
    res = run_scene(cfg, segmenter=seg, log=notes.append)
    assert res.summary["bands_reprojected"] == ["B6"] and res.summary["crs"] == "EPSG:32629"
    assert any("B6 are in another CRS" in n for n in notes)
