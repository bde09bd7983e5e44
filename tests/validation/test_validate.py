"""pipelines.validate / fusion.validation on polygons built in code, where every answer is worked out by hand.

Reference (EPSG:32632, metres from x0, y0 = 500000, 5000000; 500000 is the zone's central meridian, so geodesic
areas equal planar ones to 0.1 %):
  R0 0..90 x 0..90 (8,100 m2, medium)      D0 10..100 x 0..90: IoU 7200/9000 = 0.8      -> match R0
  R1 200..220 x 0..20 (400 m2, small)      D1 150..300 x -50..100: IoU 0.018, contains R1's centroid -> match R1
  R2 400..550 x 0..150 (22,500 m2, large)  D2 540..600 x 0..60: IoU 0.026, no centroid inside -> false
  R3 310..340 x 60..90 (900 m2, small)     D3 1000..1050 x 0..50: no overlap -> false
TP 2, FP 2, FN 2 (R2, R3): precision = recall = F1 = 0.5; recall small 1/2, medium 1, large 0.
By area: matched detected (8,100 + 22,500) / 36,700; matched reference (8,100 + 400) / 31,900.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine
from shapely.geometry import box

from common.cli import UserError
from common.geo import Feature, Grid, read_vector, transform_geometries, write_cog, write_gpkg
from fusion.validation import match_polygons, validate_inventory

ROOT = Path(__file__).resolve().parents[2]
UTM = "EPSG:32632"
X0, Y0 = 500_000.0, 5_000_000.0


def _box(x1: float, y1: float, x2: float, y2: float) -> shapely.Polygon:
    return box(X0 + x1, Y0 + y1, X0 + x2, Y0 + y2)


REF = [_box(0, 0, 90, 90), _box(200, 0, 220, 20), _box(400, 0, 550, 150), _box(310, 60, 340, 90)]
DET = [_box(10, 0, 100, 90), _box(150, -50, 300, 100), _box(540, 0, 600, 60), _box(1000, 0, 1050, 50)]
AOI = [_box(-100, -100, 1200, 300)]


def _write(path: Path, geoms: list, crs: str = UTM) -> Path:
    if crs != UTM:
        geoms = list(transform_geometries(np.asarray(geoms, dtype=object), UTM, crs))
    return write_gpkg([Feature(g, {"name": f"p{i}"}) for i, g in enumerate(geoms)], path, crs)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "ref": _write(tmp_path / "ref.gpkg", REF),
        "det": _write(tmp_path / "det.gpkg", DET, "EPSG:4326"),  # another CRS on purpose
        "aoi": _write(tmp_path / "aoi.gpkg", AOI),
    }


def test_object_metrics_known_by_hand(files: dict[str, Path]) -> None:
    res = validate_inventory(files["det"], files["ref"], aoi_path=files["aoi"], match_iou=0.1)
    m = res.metrics
    assert (m["tp"], m["fp"], m["fn"]) == (2, 2, 2)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5) and m["f1"] == pytest.approx(0.5)
    assert m["recall_small"] == pytest.approx(0.5) and m["n_small"] == 2
    assert m["recall_medium"] == pytest.approx(1.0) and m["recall_large"] == pytest.approx(0.0)
    assert m["precision_area"] == pytest.approx(30_600 / 36_700, rel=1e-3)
    assert m["recall_area"] == pytest.approx(8_500 / 31_900, rel=1e-3)
    assert m["overlap_precision"] == pytest.approx(8_200 / 36_700, rel=1e-3)
    assert m["overlap_recall"] == pytest.approx(8_200 / 31_900, rel=1e-3)
    assert m["area_reference_m2"] == pytest.approx(31_900, rel=2e-3)
    status = {(f.properties["source"], f.properties["feature_id"]): f.properties["status"] for f in res.features}
    assert status == {
        ("detected", 0): "matched",
        ("detected", 1): "matched",
        ("detected", 2): "false",
        ("detected", 3): "false",
        ("reference", 0): "matched",
        ("reference", 1): "matched",
        ("reference", 2): "missed",
        ("reference", 3): "missed",
    }
    assert res.crs == UTM  # written in the reference's CRS


def test_a_stricter_match_iou_drops_the_centroid_free_pair_only(files: dict[str, Path]) -> None:
    m = validate_inventory(files["det"], files["ref"], aoi_path=files["aoi"], match_iou=0.85).metrics
    assert (m["tp"], m["fp"], m["fn"]) == (2, 2, 2)  # D0 contains R0's centroid (45, 45): still a match
    far = [_box(10, 0, 100, 90)]
    d = np.asarray(far, dtype=object)
    r = np.asarray([_box(-80, 0, 10.5, 90)], dtype=object)  # IoU tiny, no centroid inside the other
    assert match_polygons(d, r, 0.1)[0] == {}


def test_one_to_one_greedy_by_iou() -> None:
    r = np.asarray([_box(0, 0, 100, 100)], dtype=object)
    d = np.asarray([_box(0, 0, 60, 100), _box(0, 0, 90, 100)], dtype=object)  # IoU 0.6 and 0.9
    pairs, ious = match_polygons(d, r, 0.1)
    assert pairs == {1: 0} and ious[1] == pytest.approx(0.9)


def test_only_the_area_both_cover_counts(tmp_path: Path) -> None:
    ref = _write(tmp_path / "r.gpkg", REF[:2])  # bbox 0..220 x 0..90
    det = _write(tmp_path / "d.gpkg", [DET[0], _box(5000, 0, 5050, 50)])  # the far one lies outside the reference's box
    m = validate_inventory(det, ref).metrics
    assert (m["n_detected"], m["tp"], m["fp"], m["fn"]) == (1, 1, 0, 1)


def test_a_few_detections_do_not_hide_the_misses_around_them(tmp_path: Path) -> None:
    ref = _write(tmp_path / "r.gpkg", REF)
    det = _write(tmp_path / "d.gpkg", [DET[0]])  # one detection in a corner of the reference's extent
    m = validate_inventory(det, ref).metrics
    assert (m["tp"], m["fn"], m["recall"]) == (1, 3, 0.25)


def test_pixel_metrics_on_a_grid(files: dict[str, Path], tmp_path: Path) -> None:
    grid = Grid(UTM, Affine(10.0, 0, X0 - 100, 0, -10.0, Y0 + 200), 130, 30)  # -100..1200 x -100..200
    from common.geo import rasterize

    prob = rasterize(DET, grid).astype(np.float32) * 0.9
    tif = write_cog(tmp_path / "prob.tif", prob, grid, nodata=float("nan"))
    m = validate_inventory(files["det"], files["ref"], grid_path=tif, match_iou=0.1).metrics
    # no --aoi: the detected coverage is the grid's footprint, the reference's its bounding box (0..550 x 0..150)
    assert m["pixel_tp"] == 82  # (7,200 + 400 + 600) / 100
    assert m["pixel_fn"] == (31_900 - 8_200) / 100
    # predicted inside 0..550 x 0..150: D0 8,100 + D1 (y >= 0) 15,000 + D2 (x <= 550) 600, of which 8,200 are true
    assert m["pixel_fp"] == (8_100 + 15_000 + 600 - 8_200) / 100
    assert m["pixel_iou"] == pytest.approx(82 / (82 + m["pixel_fp"] + m["pixel_fn"]))


def test_no_overlap_is_one_line(tmp_path: Path) -> None:
    ref = _write(tmp_path / "r.gpkg", REF)
    det = _write(tmp_path / "d.gpkg", [_box(100_000, 0, 100_050, 50)])
    with pytest.raises(UserError, match="do not overlap"):
        validate_inventory(det, ref)


def test_empty_and_crs_less_files_are_one_line(tmp_path: Path) -> None:
    import pyogrio.raw

    ref = _write(tmp_path / "r.gpkg", REF)
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(UserError, match="no features"):
        validate_inventory(empty, ref)
    shp = tmp_path / "nocrs.shp"
    pyogrio.raw.write(
        shp, geometry=shapely.to_wkb(np.asarray(DET, dtype=object)), field_data=[], fields=[], crs=None,
        driver="ESRI Shapefile", geometry_type="Polygon",
    )  # fmt: skip
    with pytest.raises(UserError, match="no CRS"):
        validate_inventory(shp, ref)


def test_command_writes_table_gpkg_and_logs(files: dict[str, Path], tmp_path: Path, tracking_uri: str) -> None:
    from pipelines.validate import main

    out = tmp_path / "out" / "metrics.csv"
    args = ["--detected", str(files["det"]), "--reference", str(files["ref"]), "--aoi", str(files["aoi"])]
    assert main([*args, "--out", str(out), "--tracking-uri", tracking_uri]) == 0
    table = pd.read_csv(out).set_index("metric")["value"]
    assert table["f1"] == pytest.approx(0.5)
    gp = read_vector(out.with_name("metrics_polygons.gpkg"))
    assert sorted(gp.table["status"]) == [
        "false",
        "false",
        "matched",
        "matched",
        "matched",
        "matched",
        "missed",
        "missed",
    ]
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(out.with_name("metrics_polygons.gpkg"))) as con:  # QGIS's default style, by status
        styles = con.execute("SELECT f_table_name, styleQML, useAsDefault FROM layer_styles").fetchall()
    assert [(t, d) for t, _q, d in styles] == [("validation", 1)] and 'attr="status"' in styles[0][1]
    import mlflow

    runs = mlflow.search_runs(experiment_names=["validate"])
    assert runs["metrics.f1"].iloc[0] == pytest.approx(0.5)
    assert not math.isnan(runs["metrics.recall_area"].iloc[0])


def test_command_bad_input_exit_2(tmp_path: Path, tracking_uri: str) -> None:
    ref = _write(tmp_path / "r.gpkg", REF)
    det = _write(tmp_path / "d.gpkg", [_box(100_000, 0, 100_050, 50)])
    cmd = [sys.executable, "-m", "pipelines.validate", "--detected", str(det), "--reference", str(ref)]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "m.csv"), "--tracking-uri", tracking_uri],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "do not overlap" in proc.stderr
    assert not (tmp_path / "m.csv").exists()
