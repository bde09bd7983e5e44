"""One fused row for both service paths: ``/v1/score`` and ``/v1/assess`` decide the same evidence alike, and a
region mostly outside the scene is judged on its whole area (issue 17 items 4 and 9, issue 19 item 1)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from fastapi.testclient import TestClient

from common.geo import Feature, write_gpkg
from fusion.demo.paired import PairedConfig, make_paired_regions
from fusion.demo.world import write_world
from fusion.region_features import imagery_region_features
from imagery.data import write_image
from service.api import create_app
from service.assess import AssessConfig, Assessor, assess, fuse
from service.config import ServiceConfig
from tests.fusion.fakes import FakeSegmenter, FakeTabular
from tests.service.conftest import FEATURES


def test_score_and_assess_decide_the_same_evidence_alike(tmp_path: Path) -> None:
    """No fuser; the segmenter's threshold (0.3) is not 0.5 and the patch probability (0.4) lies between them.

    Before, ``/v1/score`` cut the patch probability at 0.5 (no landslide) while an assess job cut it at the
    segmenter's threshold (landslide). The documented rule (``fusion.models``): the segmenter's own threshold.
    """
    seg = FakeSegmenter()
    seg.threshold = 0.3
    models = (FakeTabular(), seg, None)
    config = ServiceConfig(workdir=str(tmp_path / "jobs"))
    assessor = Assessor(config, models)
    client = TestClient(create_app(config, models=models, assessor=assessor))
    img = np.zeros((14, 16, 16), np.float32)
    img[0, 4:8, 4:8] = 0.4  # a faint scar: patch probability 0.4
    path = write_image(tmp_path / "p.h5", img)
    row = {"region_id": "r1", "slope_deg": 5.0, "rain_7d_mm": 10.0}  # flat: the tabular model says no
    r = client.post("/v1/score", json={"regions": [{**row, "patch_b64": base64.b64encode(path.read_bytes()).decode()}]})
    assert r.status_code == 200, r.text
    scored = r.json()["scores"][0]

    # the same evidence, as an assess job's fusion step receives it from the scene
    pred = seg.predict(img[None])
    feats = imagery_region_features(pred["prob"], seg.threshold, pred["patch_prob"], masks=pred["mask"])
    assessed = fuse(assessor.scorer, ["r1"], feats, pd.DataFrame([row]).drop(columns="region_id"), [""]).iloc[0]

    assert scored["p_imagery"] == pytest.approx(0.4) and assessed["p_imagery"] == pytest.approx(0.4)
    assert scored["p_tabular"] == pytest.approx(assessed["p_tabular"]) and scored["p_tabular"] < 0.5
    assert scored["evidence"] == assessed["evidence"] == "both"
    assert scored["decision"] == int(assessed["decision"]) == 1  # policy any: imagery 0.4 >= its threshold 0.3
    assert scored["p_fused"] == pytest.approx(assessed["p_fused"])
    assert scored["reason"] == assessed["reason"] and "imagery sees a scar" in scored["reason"]


def test_a_region_mostly_outside_the_scene_has_no_tabular_evidence(tmp_path: Path, models) -> None:
    """The main job's world (``fusion.demo.world``); one region 90 % east of the scene, one inside a block.

    Before, the window was clipped to the scene first: the factor rasters covered ~90 % of the *clipped*
    region, so it got ``evidence=both`` and the note "11% ... under cloud or nodata". Now shares are of the
    region's whole area: the factors cover under half of it, so the imagery decides alone, and the note
    says how much lies outside.
    """
    tab, seg, _ = models
    pairs = make_paired_regions(PairedConfig(n_regions=4, size=16, seed=3))
    world = write_world(pairs.table, pairs.images, pairs.masks, tmp_path / "world", features=FEATURES)
    t = world.grid.transform
    x0, y0, east = t.c, t.f, t.c + 10.0 * world.grid.width  # the scene: 38 x 38 px of 10 m, blocks 2 px apart
    top, bottom = y0 - 20.0, y0 - 180.0  # the rows of the first row of blocks
    polys = {
        "inside": shapely.box(x0 + 40.0, bottom + 20.0, x0 + 140.0, top - 20.0),  # well inside block 0
        "mostly_outside": shapely.box(east - 180.0, bottom, east + 1620.0, top),  # 180 m of 1800 m on the scene
    }
    gpkg = write_gpkg([Feature(g, {"region_id": k}) for k, g in polys.items()], tmp_path / "r.gpkg", world.grid.crs)
    cfg = AssessConfig(
        date="2024-06-01",
        regions=str(gpkg),
        scene=str(world.scene),
        dem=str(world.dem),
        factors=[f"{name}={path}" for name, path in world.factors.items()],
        out=str(tmp_path / "out"),
        device="cpu",
        progress=False,
    )
    rows = assess(cfg, models=(tab, seg, None), log=lambda _line: None).regions.set_index("region_id")
    assert rows.loc["inside", "evidence"] == "both" and rows.loc["inside", "note"] == ""
    far = rows.loc["mostly_outside"]
    assert far["evidence"] == "imagery_only" and np.isnan(far["p_tabular"])
    assert "tabular missing: factor raster(s)" in far["note"]
    assert "91% of the region without imagery (90% outside the scene)" in far["note"]
    assert far["decision"] in (0, 1) and far["p_fused"] == pytest.approx(far["p_imagery"])
