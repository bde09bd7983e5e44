"""Skip rules of the scene loop (imagery.inference.skip): tiles all water or flat are not run; their pixels are
probability 0 with the reason counted; --no-skip runs them; masked tiles are never run and stay nodata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from fusion.demo.synthetic_scene import write_synthetic_scene
from imagery.inference.config import SceneConfig
from imagery.inference.scene import run_scene
from imagery.inference.skip import SkipRules, plan_tiles, skip_reason
from pipelines.predict_scene import COMMAND
from tests.scenes.helpers import RuleSegmenter, write_tif

SIZE = 192  # 10 m px; tile 64 / overlap 16: tiles start at 0, 48, 96, 128 on both axes


def test_skip_reason_per_tile() -> None:
    valid = np.ones((4, 4), bool)
    water = np.zeros((4, 4), bool)
    steep = np.full((4, 4), 2.0)
    steep[1, 1] = 12.0
    assert skip_reason(np.zeros((4, 4), bool)) == "masked"
    assert skip_reason(np.zeros((4, 4), bool), rules=SkipRules(enabled=False)) == "masked"  # nothing to run
    assert skip_reason(valid, ~water) == "water"
    assert skip_reason(valid, water, steep) is None  # one pixel steeper than 5 degrees: run
    assert skip_reason(valid, water, np.full((4, 4), 4.9)) == "flat"
    assert skip_reason(valid, ~water, np.full((4, 4), 1.0), SkipRules(enabled=False)) is None
    part = valid.copy()
    part[:, :2] = False  # water only under the masked pixels: the valid ones are all water
    assert skip_reason(part, ~part | True) == "water"
    run, skipped = plan_tiles([0, 2], 2, valid, np.pad(~water[:, :2], ((0, 0), (0, 2))), None, SkipRules())
    assert run == [2] and skipped == {0: "water"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic scene whose 64 left columns are water (SCL 6) with a DEM that is a steep ramp on the top 64
    rows and flat below."""
    folder = write_synthetic_scene(
        tmp_path_factory.mktemp("skip") / "scene", SIZE, scar_density=1.0, cloud_fraction=0.0, dem=False
    )
    with rasterio.open(folder / "SCL.tif") as ds:
        scl, crs, transform = ds.read(1), ds.crs.to_string(), ds.transform
    scl[:, :32] = 6  # 20 m pixels: the left 64 columns of the 10 m grid
    (folder / "SCL.tif").unlink()
    write_tif(folder / "SCL.tif", scl, crs, transform, nodata=0)
    x = np.arange(SIZE, dtype=np.float32)[None, :] * np.ones((SIZE, 1), np.float32)
    dem = np.where(np.arange(SIZE)[:, None] < 64, 500.0 + 5.0 * x, 500.0).astype(np.float32)  # 26.6 deg ramp
    with rasterio.open(folder / "B02.tif") as ds:
        t10 = ds.transform
    write_tif(folder.parent / "dem.tif", dem, crs, t10)
    return folder


def _run(scene: Path, out: Path, **kw: object) -> tuple[dict, np.ndarray, RuleSegmenter]:
    seg = RuleSegmenter(["B2", "B3", "B4", "B8"])
    cfg = SceneConfig(
        scene=str(scene),
        model_uri="rule",
        out=str(out),
        dem=str(scene.parent / "dem.tif"),
        progress=False,
        tile=64,
        overlap=16,
        batch_size=16,
        min_area_m2=0,
        **kw,
    )
    res = run_scene(cfg, segmenter=seg, log=lambda _: None)
    with rasterio.open(res.paths["probability.tif"]) as ds:
        prob = ds.read(1)
    return res.summary, prob, seg


def test_water_and_flat_tiles_are_skipped_with_their_reason(scene: Path, tmp_path: Path) -> None:
    s, prob, seg = _run(scene, tmp_path / "skip")
    assert s["tiles"]["total"] == 16 and s["tiles"]["skipped_by"] == {"masked": 0, "water": 4, "flat": 6}
    assert s["tiles"]["predicted"] == 6 and s["masked_share"] == 0.0
    # only a skipped tile covers these pixels: probability 0 (not nodata), counted by reason
    assert np.all(prob[:, :48] == 0.0) and np.all(prob[112:, :] == 0.0)
    assert s["skipped_by"]["water"] == pytest.approx(48 / SIZE)
    assert s["skipped_by"]["flat"] == pytest.approx(80 * 144 / SIZE**2)
    assert s["skipped_share"] == pytest.approx(s["skipped_by"]["water"] + s["skipped_by"]["flat"])
    assert np.isfinite(prob).all()

    full, prob_all, seg_all = _run(scene, tmp_path / "all", skip=False)
    assert full["tiles"]["predicted"] == 16 and full["skipped_share"] == 0.0 and seg_all.calls > seg.calls
    assert (prob_all[:, :48] > 0).all()  # run there: the model's own (small) probabilities, not the rule's 0
    # pixels that only run tiles cover are the same with and without skipping
    np.testing.assert_allclose(prob[:96, 64:], prob_all[:96, 64:], atol=1e-6)

    flat0, _, _ = _run(scene, tmp_path / "noflat", flat_slope_deg=0.0)
    assert flat0["tiles"]["skipped_by"] == {"masked": 0, "water": 4, "flat": 0}


def test_cli_flags() -> None:
    cfg = COMMAND.parse(["--scene", "s", "--out", "o", "--model", "m", "--no-skip"])
    assert not cfg.tiles.skip and cfg.tiles.flat_slope_deg == 5.0
    assert cfg.segmenter.engine.runtime == "auto" and cfg.segmenter.engine.precision == "auto"
