"""Right or refused (issue 17, item 3): a model is applied only to scenes it fits (resolution, domain,
plausibility, synthetic training data), and the checks are recorded in the summary and MLflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from common.cli import UserError, run_main
from fusion.demo.synthetic_scene import write_synthetic_scene
from imagery.inference import SegmenterMeta
from imagery.inference.config import SceneConfig
from imagery.inference.scene import run_scene
from imagery.inference.serving import load_segmenter
from pipelines.predict_scene import main
from tests.conftest import shared_dataset
from tests.scenes.helpers import L2A_BANDS, RuleSegmenter, tiny_model

SYNTHETIC_MODEL = {"name": "built-in synthetic patches", "kind": "synthetic", "fingerprint": "0" * 64}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_scene(tmp_path_factory.mktemp("fit") / "scene", 192, scar_density=1.0, cloud_fraction=0.0)


def _cfg(scene: Path, out: Path, **kw: object) -> SceneConfig:
    return SceneConfig(scene=str(scene), model_uri="m", out=str(out), progress=False, **kw)  # type: ignore[arg-type]


@pytest.mark.real_data
def test_a_100m_scene_is_refused_for_a_10m_model(tmp_path: Path, tracking_uri: str, capsys) -> None:
    src = shared_dataset("sentinel2_l2a_cogs_29RKH")
    model = tiny_model(tmp_path / "m", L2A_BANDS)
    out = tmp_path / "out"
    argv = ["--scene", str(src), "--model", str(model), "--out", str(out), "--no-progress", "--tile", "256"]
    assert run_main(main, [*argv, "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "has 100 m pixels" in err and "learnt at 10 m" in err and "--allow-resolution-mismatch" in err
    assert not out.exists()
    run = mlflow.search_runs(experiment_names=["imagery-scene"], output_format="list")[0]
    assert run.info.status == "FAILED"
    # the override runs it, with a warning, and records the numbers
    with pytest.warns(UserWarning, match="running anyway"):
        res = run_scene(
            _cfg(src, out, tile=256, allow_resolution_mismatch=True),
            segmenter=load_segmenter(str(model)),
            log=lambda _: None,
        )
    fit = res.summary["model_fit"]
    assert fit["scene_pixel_m"] == pytest.approx(100, rel=1e-3) and fit["model_gsd_m"] == 10
    assert fit["gsd_ratio"] == pytest.approx(10, rel=1e-3)


def test_a_model_at_the_scene_resolution_runs_and_min_area_is_checked(scene: Path, tmp_path: Path) -> None:
    seg = load_segmenter(str(tiny_model(tmp_path / "m", L2A_BANDS, gsd_m=12.0)))  # 1.2x: inside the bound
    with pytest.warns(UserWarning, match=r"--min-area-m2 50 is smaller than one pixel of this scene \(100 m2\)"):
        res = run_scene(_cfg(scene, tmp_path / "o", min_area_m2=50), segmenter=seg, log=lambda _: None)
    assert res.summary["model_fit"]["gsd_ratio"] == pytest.approx(1.2, rel=1e-3)
    with pytest.raises(UserError, match="has 10 m pixels; the model m learnt at 20 m"):
        run_scene(
            _cfg(scene, tmp_path / "o2"),
            segmenter=load_segmenter(str(tiny_model(tmp_path / "m20", L2A_BANDS, gsd_m=20.0))),
            log=lambda _: None,
        )
    assert not (tmp_path / "o2").exists()


def test_domain_scores_name_the_bands_far_outside(scene: Path, tmp_path: Path, tracking_uri: str) -> None:
    stats = {b: {"mean": 0.0, "std": 1e6} for b in L2A_BANDS}  # everything in range ...
    stats["B4"] = {"mean": 50.0, "std": 0.5}  # ... but red, far above any reflectance in model units
    seg = load_segmenter(str(tiny_model(tmp_path / "m", L2A_BANDS, band_stats=stats)))
    with mlflow.start_run() as run, pytest.warns(UserWarning, match=r"bands far outside .*: B4 \d") as rec:
        res = run_scene(_cfg(scene, tmp_path / "o"), segmenter=seg, log=lambda _: None)
    assert not any("B2" in str(w.message) for w in rec if "far outside" in str(w.message))
    fit = json.loads((res.out / "summary.json").read_text())["model_fit"]
    assert set(fit["domain_scores"]) == set(L2A_BANDS) and fit["domain_bands_far"] == ["B4"]
    assert fit["domain_scores"]["B4"] > 3 > fit["domain_scores"]["B2"]
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    assert metrics["domain_score_B4"] == pytest.approx(fit["domain_scores"]["B4"]) and "flagged_share" in metrics


def test_a_model_without_statistics_gets_no_domain_scores(scene: Path, tmp_path: Path) -> None:
    res = run_scene(_cfg(scene, tmp_path / "o"), segmenter=RuleSegmenter(L2A_BANDS), log=lambda _: None)
    assert res.summary["model_fit"]["domain_scores"] == {}


def test_implausible_flagged_share_warns(scene: Path, tmp_path: Path) -> None:
    seg = load_segmenter(str(tiny_model(tmp_path / "m", L2A_BANDS, prob=0.9)))  # everything a landslide
    with pytest.warns(UserWarning, match=r"100\.0% of the valid pixels are flagged"):
        res = run_scene(_cfg(scene, tmp_path / "o"), segmenter=seg, log=lambda _: None)
    assert res.summary["model_fit"]["flagged_share"] == pytest.approx(1.0)


def test_a_synthetic_model_warns_on_a_real_scene(scene: Path, tmp_path: Path, recwarn) -> None:
    model = tiny_model(tmp_path / "syn_model", L2A_BANDS, training_data=SYNTHETIC_MODEL)
    seg = load_segmenter(str(model))
    res = run_scene(_cfg(scene, tmp_path / "o1"), segmenter=seg, log=lambda _: None)  # a synthetic scene: quiet
    assert not [w for w in recwarn if "synthetic data" in str(w.message)]
    assert res.summary["model_fit"]["training_data"] == "synthetic"
    real = tmp_path / "real"
    shutil.copytree(scene, real)
    meta = json.loads((real / "scene.json").read_text())
    meta.pop("synthetic")
    (real / "scene.json").write_text(json.dumps(meta))
    cfg = _cfg(real, tmp_path / "o2")
    cfg.model_uri = str(model)
    with pytest.warns(UserWarning, match=f"the model {model} learnt from synthetic data only"):
        run_scene(cfg, segmenter=seg, log=lambda _: None)


def test_meta_gsd_default_and_bad_values() -> None:
    base = {"model_name": "unet", "model_kwargs": {}, "channel_set": 14}
    meta = SegmenterMeta.from_dict(base)  # a model stored before gsd_m: L4S's 10 m
    assert meta.gsd_m == 10.0 and meta.band_stats == {} and meta.training_data is None and not meta.synthetic
    assert SegmenterMeta.from_dict({**base, "gsd_m": 20}).gsd_m == 20
    with pytest.raises(UserError, match="gsd_m must be a positive number"):
        SegmenterMeta.from_dict({**base, "gsd_m": -1}, "x/model_meta.json")
