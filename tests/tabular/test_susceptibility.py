"""Factor rasters + inventory -> build_table -> train_tabular (spatial CV) -> predict_tabular --raster-out.

Rasters, DEM and inventories are built in code (rasterio writes the rasters, shapely the polygons).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from affine import Affine

from common.cli import EXIT_USER_ERROR, run_main
from common.geo import Feature, Grid, transform_geometries, write_gpkg
from pipelines import build_table, predict_tabular, train_tabular
from tabular.large.source import TableSource
from tests.geo.helpers import write_tif

UTM33 = "EPSG:32633"
RES = 30.0
W, H = 160, 120
X0, Y0 = 400_000.0, 5_200_000.0


def _grid() -> Grid:
    return Grid(UTM33, Affine(RES, 0, X0, 0, -RES, Y0), W, H)


def _polygons() -> list[shapely.Geometry]:
    """Landslide polygons (UTM 33N) on the steep flanks of the synthetic hills, spread over the area."""
    rng = np.random.default_rng(3)
    polys = []
    for _ in range(40):
        cx = X0 + RES * rng.uniform(5, W - 5)
        cy = Y0 - RES * rng.uniform(5, H - 5)
        polys.append(shapely.Point(cx, cy).buffer(rng.uniform(40, 90), quad_segs=4))
    return polys


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """Factor rasters, a DEM with a nodata corner, and a GeoPackage inventory in EPSG:4326."""
    root = tmp_path_factory.mktemp("scene")
    grid = _grid()
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    dem = 800 + 150 * np.sin(rows / 11.0) * np.cos(cols / 17.0) + 2.0 * rows
    dem[:6, :8] = -9999.0  # nodata corner
    write_tif(root / "dem.tif", dem.astype(np.float32), grid, nodata=-9999.0)
    rain = (1200 + 300 * np.cos(cols / 40.0) + 50 * np.sin(rows / 25.0)).astype(np.float32)
    write_tif(root / "rain.tif", rain, grid)
    geology = (1 + (cols // 40) + 4 * (rows // 60)).astype(np.int16)
    write_tif(root / "geology.tif", geology, grid, nodata=0)
    # a coarser raster in another CRS (EPSG:4326): reprojected onto the grid bilinearly
    ll = grid.to_crs("EPSG:4326")
    lr, lc = np.mgrid[0 : ll.height, 0 : ll.width].astype(np.float64)
    write_tif(root / "soil.tif", (10 + lr / 7 + lc / 9).astype(np.float32), ll)
    polys = _polygons()
    ll_polys = transform_geometries(np.asarray(polys, dtype=object), UTM33, "EPSG:4326")
    feats = [Feature(g, {"year": 2000 + i % 10, "kind": "slide"}) for i, g in enumerate(ll_polys)]
    write_gpkg(feats, root / "inventory.gpkg", "EPSG:4326")
    faults = [Feature(shapely.LineString([(X0 + 500, Y0 - 200), (X0 + 3000, Y0 - 3000)]), {"id": 1})]
    write_gpkg(faults, root / "faults.gpkg", UTM33)
    return {"root": root, "grid": grid, "polys": polys}


def _build(scene: dict, out: Path, *extra: str) -> int:
    r = scene["root"]
    return run_main(
        build_table.main,
        [
            "--rasters",
            str(r / "rain.tif"),
            str(r / "geology.tif"),
            f"soil={r / 'soil.tif'}",
            "--categorical",
            "geology",
            "--dem",
            str(r / "dem.tif"),
            "--terrain",
            "slope,aspect,curvature,tpi,tri,roughness,twi",
            "--distance-to",
            f"faults={r / 'faults.gpkg'}",
            "--inventory",
            str(r / "inventory.gpkg"),
            "--out",
            str(out),
            "--block-cells",
            "5000",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def built(scene, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("built") / "table"
    uri = f"sqlite:///{out.parent / 'mlruns' / 'mlflow.db'}"
    assert _build(scene, out, "--tracking-uri", uri) == 0
    return {"out": out, "uri": uri}


def test_build_table_columns_grid_and_labels(scene, built):
    src = TableSource(built["out"])
    assert src.columns[:2] == ["x", "y"] and src.columns[-1] == "landslide"
    expected = {"rain", "geology", "soil", "slope", "aspect_sin", "aspect_cos", "plan_curvature"}
    expected |= {"profile_curvature", "tpi", "tri", "roughness", "twi", "faults"}
    assert expected <= set(src.columns)
    g = src.meta.grid_object()
    assert g == scene["grid"]
    assert src.meta.negative_rate == 1.0 and src.meta.categorical == ("geology",)
    df = pd.read_parquet(built["out"])
    assert df["rain"].dtype == np.float32 and df["geology"].dtype == np.int32
    # nodata corner of the DEM (and its 1-pixel halo) is left out
    assert len(df) < W * H and not df.isna().any().any()
    # every positive cell centre lies inside an inventory polygon; every cell inside one is positive
    union = shapely.union_all(scene["polys"])
    inside = shapely.contains_xy(union, df["x"].to_numpy(), df["y"].to_numpy())
    assert df["landslide"].sum() > 100
    np.testing.assert_array_equal(inside, df["landslide"].to_numpy() == 1)
    # distances in metres: 0 on the fault line, growing away from it
    assert df["faults"].min() < RES and df["faults"].max() > 1000
    assert (df["slope"] >= 0).all() and (df["slope"] < 90).all()


def test_build_train_predict_raster_end_to_end(scene, built, tmp_path):
    uri = built["uri"]
    train_args = ["--data", str(built["out"]), "--folds", "3", "--block-size", "900", "--max-rounds", "60"]
    train_args += ["--early-stopping", "10", "--tracking-uri", uri]
    cfg = train_tabular.COMMAND.parse([*train_args, "--no-register"])
    lines: list[str] = []
    result = train_tabular.COMMAND.call(cfg, log=lines.append)
    client = mlflow.MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.data.params["cv_mode"] == "spatial"
    assert "default" in run.data.params["cv_mode_reason"]
    assert run.data.metrics["roc_auc_mean"] > 0.5
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"reliability.png", "calibration.csv", "oof_predictions.parquet", "shap_importance.csv"} <= names
    raster = tmp_path / "maps" / "susceptibility.tif"
    code = run_main(
        predict_tabular.main,
        ["--model", result.model_uri, "--data", str(built["out"]), "--out", str(tmp_path / "scores")]
        + ["--raster-out", str(raster), "--tracking-uri", uri],
    )
    assert code == 0
    scores = pd.read_parquet(tmp_path / "scores")
    assert list(scores.columns) == ["x", "y", "p_landslide", "label"] and len(scores) == len(
        pd.read_parquet(built["out"])
    )
    with rasterio.open(raster) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == scene["grid"].transform
        assert (ds.height, ds.width) == (H, W) and ds.dtypes[0] == "float32"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        p = ds.read(1)
    assert np.isnan(p[:4, :6]).all()  # DEM nodata -> nodata
    assert np.isfinite(p).sum() == len(scores)
    with rasterio.open(raster.with_name("susceptibility_classes.tif")) as ds:
        cls = ds.read(1)
        assert ds.nodata == 0 and ds.transform == scene["grid"].transform
    assert {0, 1, 5} <= set(np.unique(cls).tolist()) <= {0, 1, 2, 3, 4, 5}  # ties at a break may empty a class
    assert (cls == 0).sum() == np.isnan(p).sum()
    assert raster.with_name("susceptibility_map.png").stat().st_size > 1000
    # the map ranks landslide cells higher
    union = shapely.union_all(scene["polys"])
    xs, ys = scene["grid"].cell_centres()
    inside = shapely.contains_xy(union, xs, ys) & np.isfinite(p)
    assert np.nanmean(p[inside]) > np.nanmean(p[~inside & np.isfinite(p)])


def test_negative_sampling_rate_and_prior(scene, tmp_path, tracking_uri):
    out = tmp_path / "sampled"
    assert _build(scene, out, "--negatives-per-positive", "2") == 0
    src = TableSource(out)
    df = pd.read_parquet(out)
    n_pos, n_neg = int(df["landslide"].sum()), int((df["landslide"] == 0).sum())
    assert 1.4 < n_neg / n_pos < 2.8
    assert 0 < src.meta.negative_rate < 0.2
    summary = json.loads((out / "_build_summary.json").read_text())
    assert summary["positive_cells"] == n_pos


def _write_part(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


@pytest.mark.parametrize(
    "case",
    ["no_overlap", "inventory_outside", "filter_empty", "raster_no_crs", "too_many_levels", "zero_negatives"],
)
def test_build_table_bad_input(scene, tmp_path, case, capsys, tracking_uri):
    r = scene["root"]
    grid = scene["grid"]
    rasters = [str(r / "rain.tif")]
    inv = str(r / "inventory.gpkg")
    extra: list[str] = []
    if case == "no_overlap":
        far = Grid(UTM33, Affine(RES, 0, X0 + 1e6, 0, -RES, Y0), W, H)
        rasters.append(str(write_tif(tmp_path / "far.tif", np.ones((H, W), np.float32), far)))
        want = "does not overlap"
    elif case == "inventory_outside":
        inv = str(tmp_path / "away.gpkg")
        write_gpkg([Feature(shapely.Point(X0 + 5e5, Y0).buffer(100), {"a": 1})], inv, UTM33)
        want = "none falls on the grid"
    elif case == "filter_empty":
        extra = ["--inventory-filter", "year > 3000"]
        want = "no features"
    elif case == "raster_no_crs":
        rasters.append(str(write_tif(tmp_path / "nocrs.tif", np.ones((H, W), np.float32), None)))
        want = "no CRS"
    elif case == "too_many_levels":
        lv = np.arange(H * W, dtype=np.int32).reshape(H, W) % 300
        rasters.append(f"lith={write_tif(tmp_path / 'lith.tif', lv, grid)}")
        extra = ["--categorical", "lith"]
        want = "more than 255 classes"
    else:
        inv = str(tmp_path / "all.gpkg")
        write_gpkg(
            [Feature(shapely.box(X0 - 100, Y0 - RES * H - 100, X0 + RES * W + 100, Y0 + 100), {"a": 1})], inv, UTM33
        )
        want = "no negative cell"
    out = tmp_path / "out"
    code = run_main(
        build_table.main,
        ["--rasters", *rasters, "--inventory", inv, "--out", str(out), *extra],
    )
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR, err
    assert want in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and runs[0].info.status == "FAILED"


def test_schema_mismatch_names_part_and_column(tmp_path, capsys, tracking_uri):
    root = tmp_path / "ds"
    _write_part(root / "partition=1" / "part-0.parquet", pa.table({"a": [1.0, 2.0], "landslide": [0, 1]}))
    _write_part(root / "partition=2" / "part-0.parquet", pa.table({"a": ["x", "y"], "landslide": [0, 1]}))
    code = run_main(train_tabular.main, ["--data", str(root)])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR
    assert "partition=2" in err and "'a'" in err and len(err.strip().splitlines()) == 1


def test_block_size_larger_than_area(built, tmp_path, capsys, tracking_uri):
    code = run_main(train_tabular.main, ["--data", str(built["out"]), "--block-size", "50000"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and "fewer than the 5 CV folds" in err and "--block-size" in err


# -- real data (../shared/data; skipped where absent) ---------------------------------------------
@pytest.mark.real_data
@pytest.mark.parametrize(
    ("folder", "file", "target", "extra"),
    [
        ("ecuador_lsl_spdatalarge", "lsl.csv", "lslpts", ["--block-size", "500"]),  # UTM metres: spatial by default
        (
            "swiss_landslideml",
            "training.csv",
            "label",
            ["--cv", "spatial", "--xy", "xcoord,ycoord", "--drop", "Ereignis-Nr", "--block-size", "10000"],
        ),
    ],
)
def test_real_tables_spatial_cv(folder, file, target, extra, tracking_uri):
    from tests.conftest import shared_dataset

    path = shared_dataset(folder) / file
    args = ["--data", str(path), "--target", target, "--max-rounds", "200", *extra]
    cfg = train_tabular.COMMAND.parse([*args, "--no-register"])
    res = train_tabular.COMMAND.call(cfg, log=lambda s: None)
    run = mlflow.MlflowClient(tracking_uri).get_run(res.run_id)
    assert run.data.params["cv_mode"] == "spatial"
    features = run.data.params["features"].split(",")
    assert not {"x", "y", "xcoord", "ycoord"} & set(features)  # coordinates place blocks, never features
    assert 0.6 < res.summary["roc_auc_mean"] < 1.0


@pytest.mark.real_data
def test_real_dem_terrain_and_glc_inventory(tmp_path, tracking_uri, capsys):
    """Terrain factors from the real Copernicus DEM (EPSG:4326) on a UTM grid over Sao Tome; the real
    NASA GLC points (CSV lon/lat) are all outside it: a one-line error naming both extents."""
    from tests.conftest import shared_dataset

    dem = shared_dataset("copernicus_dem_cog") / "Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"
    glc = shared_dataset("nasa_glc") / "Global_Landslide_Catalog_Export.csv"
    # a 6 x 6 km UTM 32N grid over the island's volcanic relief (about 6.55 E, 0.3 N)
    grid = Grid("EPSG:32632", Affine(30, 0, 225_000, 0, -30, 35_000), 200, 200)
    ref = write_tif(tmp_path / "ref.tif", np.zeros(grid.shape, np.float32), grid)
    polys = [shapely.Point(225_000 + 30 * c, 35_000 - 30 * r).buffer(150) for r, c in ((50, 50), (120, 80), (150, 160))]
    write_gpkg([Feature(p, {"id": i}) for i, p in enumerate(polys)], tmp_path / "inv.gpkg", "EPSG:32632")
    out = tmp_path / "table"
    args = ["--grid", str(ref), "--dem", str(dem), "--terrain", "slope,aspect,tpi,twi", "--out", str(out)]
    code = run_main(build_table.main, [*args, "--inventory", str(tmp_path / "inv.gpkg")])
    assert code == 0, capsys.readouterr().err
    df = pd.read_parquet(out)
    assert {"slope", "aspect_sin", "aspect_cos", "tpi", "twi"} <= set(df.columns) and df["landslide"].sum() > 20
    assert df["slope"].max() > 20  # steep volcanic relief, in true degrees from a degree-based DEM
    code = run_main(build_table.main, [*args, "--inventory", str(glc), "--buffer-m", "500"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR and "none falls on the grid" in err and len(err.splitlines()) == 1


# -- issue 17: classes on ties, sampled tables, the map files in the summary --------------------------
def test_class_breaks_keep_ties_together_and_hold_the_shares(tmp_path):
    """A flat 'sea' of one probability (60 % of the cells) stays in one class, the lowest; the island's
    shares are the documented 25/15/7.5/2.5 % as closely as ties allow; NaN cells are class 0 and not counted."""
    from tabular.susceptibility import SusceptibilityRaster, class_breaks, class_shares, classify, legend_labels

    rng = np.random.default_rng(0)
    sea = np.full(60_000, 9.54e-06)
    island = rng.uniform(1e-4, 0.5, 40_000)
    p = np.concatenate([sea, island, np.full(5_000, np.nan)])
    b = class_breaks(p)
    cls = classify(p, b)
    assert (cls[:60_000] == 1).all()  # ties together, in the lowest class (old code: all "low")
    assert (cls[-5_000:] == 0).all()
    shares, lo, hi = class_shares(p, b)
    np.testing.assert_allclose(shares, [0.60, 0.15, 0.15, 0.075, 0.025], atol=2e-4)
    labels = legend_labels(shares, lo, hi)
    assert labels[0].startswith("very low (p = 9.54e-06") and "9.54e-06-9.54e-06" not in " ".join(labels)
    # the island alone: the documented shares (old code on a real tile: 6/69/15/7.5/2.5 %)
    isl = np.concatenate([np.round(island, 2), np.full(100, np.nan)])  # coarse values: many ties
    s_isl = class_shares(isl, class_breaks(isl))[0]
    np.testing.assert_allclose(s_isl, [0.50, 0.25, 0.15, 0.075, 0.025], atol=0.012)
    # one value everywhere: one class, the others empty (and said so)
    flat = np.full(1000, 0.3)
    s_flat, lo_f, hi_f = class_shares(flat, class_breaks(flat))
    assert s_flat.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert legend_labels(s_flat, lo_f, hi_f)[1] == "low (empty)"
    # on a grid: masked (NaN) cells are 0 in the classes raster and the shares are of the mapped cells
    grid = Grid("EPSG:32633", Affine(10, 0, 0, 0, -10, 1000), 100, 100)
    vals = np.where(np.arange(10_000) < 5_000, 0.01, np.linspace(0.02, 0.9, 10_000)).reshape(100, 100)
    vals[:10] = np.nan
    xs, ys = grid.cell_centres()
    with SusceptibilityRaster(grid, tmp_path / "s.tif") as w:
        w.add(xs.ravel(), ys.ravel(), vals.ravel().astype(np.float32))
    with rasterio.open(tmp_path / "susceptibility_classes.tif") as ds:
        c = ds.read(1)
        assert ds.tags()["class_shares"].startswith("0.5")
    assert (c[:10] == 0).all() and (c[10:50] == 1).all() and (np.diff(c[50:].ravel().astype(int)) >= 0).all()
    names = ("s.tif", "susceptibility_classes.tif", PNG, "s.qml", "susceptibility_classes.qml")  # with the QGIS styles
    assert w.summary()["files"] == [str(tmp_path / n) for n in names]


PNG = "susceptibility_map.png"


def test_map_of_a_sampled_table_is_refused_then_allowed_with_a_warning(scene, tmp_path, capsys, tracking_uri):
    out = tmp_path / "sampled"
    assert _build(scene, out, "--negatives-per-positive", "2") == 0
    train = ["--data", str(out), "--folds", "2", "--block-size", "900", "--max-rounds", "20"]
    cfg = train_tabular.COMMAND.parse([*train, "--no-register"])
    res = train_tabular.COMMAND.call(cfg, log=lambda s: None)
    raster = tmp_path / "maps" / "s.tif"
    args = ["--model", res.model_uri, "--data", str(out), "--out", str(tmp_path / "scores")]
    args += ["--raster-out", str(raster)]
    capsys.readouterr()
    code = run_main(predict_tabular.main, args)
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR and "--all-cells" in err and len(err.splitlines()) == 1, err
    assert not raster.exists() and not (tmp_path / "scores").exists()
    code = run_main(predict_tabular.main, [*args, "--allow-sampled-map", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "warning:" in captured.err and "sampled cells" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["maps"] == [
        str(raster),
        str(raster.with_name("susceptibility_classes.tif")),
        str(raster.with_name(PNG)),
        str(raster.with_suffix(".qml")),
        str(raster.with_name("susceptibility_classes.qml")),
    ]
    assert all(Path(m).exists() for m in summary["maps"])


def test_raster_out_in_a_read_only_folder_names_the_users_path(built, tmp_path, capsys, tracking_uri, monkeypatch):
    import os

    import tabular.susceptibility

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: the folder check is what is tested
        real = os.access
        monkeypatch.setattr(tabular.susceptibility.os, "access", lambda p, m: False if Path(p) == ro else real(p, m))
    try:
        train = ["--data", str(built["out"]), "--folds", "0", "--max-rounds", "10"]
        cfg = train_tabular.COMMAND.parse([*train, "--no-register"])
        res = train_tabular.COMMAND.call(cfg, log=lambda s: None)
        capsys.readouterr()
        code = run_main(
            predict_tabular.main,
            ["--model", res.model_uri, "--data", str(built["out"]), "--out", str(tmp_path / "scores")]
            + ["--raster-out", str(ro / "s.tif")],
        )
        err = capsys.readouterr().err.strip()
    finally:
        ro.chmod(0o755)
    assert code == EXIT_USER_ERROR and f"cannot write {ro / 's.tif'}" in err and len(err.splitlines()) == 1, err
    assert "TIFF" not in err and not (tmp_path / "scores").exists() and list(ro.iterdir()) == []


def test_parts_sampled_differently_are_an_error_naming_both(scene, tmp_path, capsys, tracking_uri):
    """Issue 17 item 10: one part built with --all-cells, one with --negatives-per-positive 5, in one folder."""
    assert _build(scene, tmp_path / "all", "--all-cells") == 0
    assert _build(scene, tmp_path / "sampled", "--negatives-per-positive", "5") == 0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    a = next((tmp_path / "all").rglob("*.parquet"))
    b = next((tmp_path / "sampled").rglob("*.parquet"))
    (mixed / "part-a.parquet").write_bytes(a.read_bytes())
    (mixed / "part-b.parquet").write_bytes(b.read_bytes())
    capsys.readouterr()
    code = run_main(train_tabular.main, ["--data", str(mixed), "--folds", "2"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR and len(err.splitlines()) == 1, err
    assert "part-a.parquet" in err and "part-b.parquet" in err and "sampled differently" in err
    assert "negatives_per_positive" in err and "mode all" in err


def test_sigterm_during_build_table_leaves_no_staging_folder(scene, tmp_path, monkeypatch, tracking_uri):
    import os
    import signal

    import tabular.build
    from common.cli import EXIT_TERMINATED

    real = tabular.build._terrain_block
    calls = []

    def block_then_sigterm(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(tabular.build, "_terrain_block", block_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out" / "table"
    try:
        code = _build(scene, out)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == EXIT_TERMINATED and len(calls) >= 2
    assert list(out.parent.iterdir()) == []  # no table, no hidden staging folder
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs[0].info.status == "KILLED"
