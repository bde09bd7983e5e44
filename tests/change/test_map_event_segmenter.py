"""map_event --imagery-model: a tiny segmenter trained in the test, run on the gated tiles of the synthetic event
world (temporal and single-date), fused per pixel and summarised per polygon; refusals in one line."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import run_main
from common.geo import RasterOnGrid
from pipelines.map_event import main
from tests.change.helpers import SYN_EVENT, SYN_GRID, lonlat_box, map_event_argv, write_synthetic_items
from tests.change.models import single_date_model, temporal_model

EVENT = SYN_EVENT
SLIDE_CENTRE = (60, 66)
QUIET = (5, 5)  # covered only by the tile at (0, 0): no change in it, the gate skips it


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tiles: one thread is fastest, and far faster on a loaded shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synthetic_items(tmp_path_factory.mktemp("segworld"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segmodels")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            "pre-post": temporal_model(root / "pre-post", "pre-post", steps=20),
            "single": single_date_model(root / "single", steps=3),
        }
    finally:
        torch.set_num_threads(threads)


def _argv(items: Path, dem: Path, out: Path, *extra: str) -> list[str]:
    return map_event_argv(items, dem, out, "--device", "cpu", "--runtime", "torch", *extra, block=96)


def _read(path: Path) -> np.ndarray:
    with RasterOnGrid(path, SYN_GRID, "nearest", bands=1) as r:
        return r.read()


def _features(out: Path) -> list[dict]:
    return [f["properties"] for f in json.loads((out / "landslides.geojson").read_text())["features"]]


def test_temporal_model_runs_on_gated_tiles_and_is_fused(world, models, tmp_path: Path, tracking_uri: str) -> None:
    items, dem = world
    plain, with_model = tmp_path / "plain", tmp_path / "model"
    assert main(_argv(items, dem, plain)) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a synthetic model on the synthetic world: no warning
        assert main(_argv(items, dem, with_model, "--imagery-model", str(models["pre-post"]))) == 0
    s = json.loads((with_model / "summary.json").read_text())["segmenter"]
    assert s["inputs"] == ["pre", "post"] and s["temporal"] == "pre-post"
    assert s["tiles_total"] == 16 and 0 < s["tiles_run"] < 16
    assert s["skipped_share"] == pytest.approx((16 - s["tiles_run"]) / 16, abs=1e-4) and s["skipped_share"] > 0
    assert s["model_fit"]["gsd_ratio"] == 1.0 and s["model_fit"]["training_data"] == "synthetic"
    assert "segmenter.tif" in json.loads((with_model / "summary.json").read_text())["outputs"]
    assert "none" in json.loads((plain / "summary.json").read_text())["segmenter"]
    seg = _read(with_model / "segmenter.tif")
    assert np.isnan(seg[QUIET])  # the gate kept the segmenter off this tile: no p_segmenter, not 0
    assert seg[SLIDE_CENTRE] > 0.5  # the trained model sees the scar
    # fused: a segmenter above 0.5 raises the change probability, none leaves it as it was
    p0, p1 = _read(plain / "probability.tif"), _read(with_model / "probability.tif")
    assert p1[SLIDE_CENTRE] > p0[SLIDE_CENTRE]
    assert p1[QUIET] == pytest.approx(p0[QUIET], abs=1e-6)
    slide = [f for f in _features(with_model) if f["p_segmenter"] is not None]
    assert len(slide) == 1 and slide[0]["p_segmenter"] > 0.5 and "segmenter_scar" in slide[0]["evidence"]
    assert slide[0]["confidence"] >= _features(plain)[0]["confidence"]
    # --no-gate: every observed tile runs
    ungated = tmp_path / "ungated"
    assert main(_argv(items, dem, ungated, "--imagery-model", str(models["pre-post"]), "--no-gate")) == 0
    s2 = json.loads((ungated / "summary.json").read_text())["segmenter"]
    assert s2["tiles_run"] == 16 and s2["skipped_share"] == 0 and np.isfinite(_read(ungated / "segmenter.tif")[QUIET])
    assert "p_segmenter" in (with_model / "report.html").read_text()


def test_single_date_model_runs_on_the_post_composite_only(
    world, models, tmp_path: Path, tracking_uri: str, monkeypatch
) -> None:
    import imagery.change.event as event

    items, dem = world
    seen: list[str] = []
    real = event.band_composite

    def spy(observations, grid, window, bands, **kw):
        seen.append("post" if observations[0].date.isoformat() > EVENT else "pre")
        return real(observations, grid, window, bands, **kw)

    monkeypatch.setattr(event, "band_composite", spy)
    out = tmp_path / "single"
    assert main(_argv(items, dem, out, "--imagery-model", str(models["single"]))) == 0
    s = json.loads((out / "summary.json").read_text())["segmenter"]
    assert s["inputs"] == ["post"] and s["temporal"] is None and s["composite_bands"] == ["B2", "B3", "B4", "B8", "B11"]
    assert seen and set(seen) == {"post"}  # the pre-event composite of the model's bands is never made
    seg = _read(out / "segmenter.tif")
    assert np.isnan(seg[QUIET]) and np.isfinite(seg[SLIDE_CENTRE])


def _edited(model: Path, dst: Path, **fields: object) -> Path:
    shutil.copytree(model, dst)
    meta = json.loads((dst / "model_meta.json").read_text())
    meta.update(fields)
    (dst / "model_meta.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"gsd_m": 30.0}, "learnt at 30 m"),
        ({"sensor": "s2+s1"}, "Sentinel-1"),
    ],
)
def test_models_map_event_cannot_feed_are_refused_in_one_line(
    fields, words, world, models, tmp_path: Path, tracking_uri: str, capsys
) -> None:
    items, dem = world
    model = _edited(models["pre-post"], tmp_path / "m", **fields)
    out = tmp_path / "out"
    assert run_main(main, _argv(items, dem, out, "--imagery-model", str(model))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not out.exists()


def test_resume_fingerprint_holds_the_model_and_the_gate(world, models) -> None:
    from imagery.change.acquisition import output_grid, select_observations
    from imagery.change.engine import fingerprint
    from imagery.change.event import EventConfig, _settings
    from imagery.change.segmenter import GateParams
    from imagery.data.stac import load_items
    from imagery.inference.event import EventSegmenter

    items, dem = world
    bbox = lonlat_box(SYN_GRID, inset_m=60.0)
    import datetime as dt

    windows = select_observations(load_items(str(items)), bbox, dt.date(2023, 5, 16), 90, 45)
    cfg = EventConfig(bbox=bbox, dem=str(dem))
    grid = output_grid(bbox)
    a = EventSegmenter(str(models["pre-post"]), device="cpu", runtime="torch")
    b = EventSegmenter(str(models["single"]), device="cpu", runtime="torch")

    def digest(config: EventConfig, seg: object) -> str:
        return fingerprint(*_settings(windows, config, grid, None, seg))

    base = digest(cfg, a)
    assert base == digest(cfg, a)
    assert base != digest(cfg, b) != digest(cfg, None)
    assert base != digest(EventConfig(bbox=bbox, dem=str(dem), gate=GateParams(enabled=False)), a)


def test_the_norm_statistics_stored_with_a_temporal_model_are_applied(models, tmp_path: Path) -> None:
    """A model trained on channels normalised by the dataset's norm file (SegmenterMeta.channel_norm) gets its
    composite channels normalised the same way in map_event, and only then."""
    import json
    import shutil

    from imagery.inference.event import EventSegmenter

    normed = tmp_path / "normed"
    shutil.copytree(models["pre-post"], normed)
    meta_path = normed / "model_meta.json"
    meta = json.loads(meta_path.read_text())
    meta["channel_norm"] = {"B04": {"mean": 0.1, "std": 0.5}}
    meta_path.write_text(json.dumps(meta))
    plain = EventSegmenter(str(models["pre-post"]), device="cpu", runtime="torch")
    seg = EventSegmenter(str(normed), device="cpu", runtime="torch")
    rng = np.random.default_rng(0)
    k = len(seg.s2_bands)
    post, pre = (
        rng.uniform(0.01, 0.4, (k, 8, 8)).astype(np.float32),
        rng.uniform(0.01, 0.4, (k, 8, 8)).astype(np.float32),
    )
    slope, dem = np.full((8, 8), 20.0, np.float32), np.zeros((8, 8), np.float32)
    a, b = plain.inputs(post, pre, slope, dem), seg.inputs(post, pre, slope, dem)
    names = list(plain.model_bands)
    for name in ("B04@pre", "B04@post"):
        i = names.index(name)
        np.testing.assert_allclose(b[i], (a[i] - 0.1) / 0.5, rtol=1e-5)
    others = [i for i, n in enumerate(names) if not n.startswith("B04@")]
    np.testing.assert_array_equal(b[others], a[others])
    assert seg.describe()["channel_norm"] != plain.describe()["channel_norm"]  # part of the --resume fingerprint


def test_a_temporal_model_refuses_single_date_data_in_one_line(models, tmp_path: Path, tracking_uri: str, capsys):
    from imagery.data.synthetic import write_synthetic_l4s
    from pipelines import evaluate_imagery

    data = write_synthetic_l4s(tmp_path / "l4s", n_patches=2, size=32)
    argv = ["--model", str(models["pre-post"]), "--data", str(data), "--split", "train", "--device", "cpu"]
    argv += ["--runtime", "torch"]
    assert run_main(evaluate_imagery.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "temporal set 'pre-post'" in err[0], err


@pytest.mark.slow  # a local Dask cluster takes about a minute to start on a loaded 2-core machine
def test_dask_engine_runs_the_segmenter_like_local(world, models, tmp_path: Path, tracking_uri: str) -> None:
    items, dem = world
    model = _stats_far_on(models["pre-post"], tmp_path / "m", "B04@post")  # domain scores to compare
    extra = ("--imagery-model", str(model), "--block", "48", "--no-gate")
    assert main(_argv(items, dem, tmp_path / "local", *extra)) == 0
    assert main(_argv(items, dem, tmp_path / "dask", *extra, "--engine", "dask", "--workers", "1")) == 0
    for name in ("segmenter.tif", "probability.tif"):
        np.testing.assert_allclose(_read(tmp_path / "local" / name), _read(tmp_path / "dask" / name), atol=1e-5)
    assert _features(tmp_path / "local") == _features(tmp_path / "dask")
    local, dask = _summary(tmp_path / "local")["segmenter"], _summary(tmp_path / "dask")["segmenter"]
    assert local["model_fit"]["domain_scores"] and local["model_fit"] == dask["model_fit"]
    assert local["flagged_pixels"] == dask["flagged_pixels"]
    rejected = [json.loads((tmp_path / k / "rejected.geojson").read_text())["features"] for k in ("local", "dask")]
    assert rejected[0] == rejected[1] and {f["properties"]["kind"] for f in rejected[0]} == {
        "flat_loss",
        "segmenter_only",
    }


def test_fusion_rule_with_a_segmenter() -> None:
    from fusion.change_fusion import fuse_change

    score = np.array([0.5, 0.5, 0.5, np.nan], np.float32)
    seg = np.array([0.9, 0.1, np.nan, 0.9], np.float32)
    out = fuse_change(score, None, p_segmenter=seg)
    np.testing.assert_allclose(out[:3], [0.75, 0.25, 0.5], atol=1e-4)  # half a logit each way; NaN: no evidence
    assert np.isnan(out[3])  # unobserved stays unobserved
    np.testing.assert_allclose(fuse_change(score, None, p_segmenter=seg, segmenter_weight=0.0)[:3], 0.5, atol=1e-4)
    with pytest.raises(ValueError, match="segmenter_weight"):
        fuse_change(score, None, p_segmenter=seg, segmenter_weight=2.0)


def test_a_synthetic_model_on_real_items_warns(world, models, tmp_path: Path, tracking_uri: str) -> None:
    items, dem = world
    data = json.loads(items.read_text())
    for f in data["features"]:
        f["properties"].pop("synthetic")  # items that do not say they are synthetic are taken as real
    real = items.parent / "items_real.json"
    real.write_text(json.dumps(data))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="learnt from synthetic data only"):
        assert main(_argv(real, dem, out, "--imagery-model", str(models["single"]))) == 0
    assert json.loads((out / "summary.json").read_text())["segmenter"]["model_fit"]["training_data"] == "synthetic"


def test_the_automatic_engine_choice_takes_temporal_models(models) -> None:
    """--runtime auto (the default) times candidates on reference inputs; those failed on temporal channel names."""
    from imagery.inference.engine import reference_inputs
    from imagery.inference.serving import load_segmenter

    seg = load_segmenter(str(models["pre-post"]), device="cpu")
    x = reference_inputs(seg, n=2)
    assert tuple(x.shape) == (2, len(seg.bands), 32, 32) and bool(torch.isfinite(x).all())
    names = list(seg.bands)
    post, pre = x[0, names.index("B04@post")], x[0, names.index("B04@pre")]
    assert 0 < float(pre.mean()) < 0.5 and 0 < float(post.mean()) < 0.5  # reflectance, as the model learnt


def test_resume_with_a_model_reuses_blocks_only_for_the_same_model(
    world, models, tmp_path: Path, tracking_uri: str, monkeypatch
) -> None:
    import imagery.change.event as event_mod

    items, dem = world
    fresh, out = tmp_path / "fresh", tmp_path / "out"
    model = ("--imagery-model", str(models["pre-post"]), "--block", "48")
    assert main(_argv(items, dem, fresh, *model)) == 0
    real, calls = event_mod.process_block, {"n": 0}

    def dies_on_the_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a kill in the middle of the run
        return real(*args, **kwargs)

    def killed(target: Path) -> None:
        calls["n"] = 0
        monkeypatch.setattr(event_mod, "process_block", dies_on_the_third)
        with pytest.raises(KeyboardInterrupt):
            main(_argv(items, dem, target, *model))
        monkeypatch.setattr(event_mod, "process_block", real)

    killed(out)
    assert main(_argv(items, dem, out, *model, "--resume")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["blocks_resumed"] == 2 and summary["segmenter"]["tiles_total"] > 0
    for name in ("segmenter.tif", "probability.tif"):
        np.testing.assert_array_equal(_read(fresh / name), _read(out / name))
    assert _features(fresh) == _features(out)
    killed(tmp_path / "again")  # the same kill, resumed with another model: no block is reused
    other = ("--imagery-model", str(models["single"]), "--block", "48")
    assert main(_argv(items, dem, tmp_path / "again", *other, "--resume")) == 0
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["blocks_resumed"] == 0


def test_a_registered_model_by_alias(world, models, tmp_path: Path, tracking_uri: str, capsys) -> None:
    import mlflow

    items, dem = world
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(models["pre-post"]), "segmenter")
    client.create_registered_model("event-seg")
    mv = client.create_model_version("event-seg", f"{run.info.artifact_uri}/segmenter", run_id=run.info.run_id)
    client.set_registered_model_alias("event-seg", "champion", mv.version)
    out = tmp_path / "out"
    assert main(_argv(items, dem, out, "--imagery-model", "models:/event-seg@champion")) == 0
    seg = json.loads((out / "summary.json").read_text())["segmenter"]
    assert seg["model"] == "models:/event-seg@champion" and seg["model_fit"]["registered"] == "event-seg version 1"
    assert "models:/event-seg@champion: event-seg version 1" in capsys.readouterr().out


# -- the model's fit to the scene (imagery.inference.fitness, as predict_scene checks it) ----------------------
def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _last_run():
    import mlflow

    runs = mlflow.search_runs(experiment_names=["event-map"], output_format="list", order_by=["start_time DESC"])
    return runs[0]


def test_a_20m_model_is_refused_before_any_work_and_runs_with_the_flag(
    world, models, tmp_path: Path, tracking_uri: str, capsys
) -> None:
    items, dem = world
    model = _edited(models["pre-post"], tmp_path / "m20", gsd_m=20.0)
    out = tmp_path / "out"
    assert run_main(main, _argv(items, dem, out, "--imagery-model", str(model))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 10 m pixels" in err[0] and "learnt at 20 m" in err[0], err
    assert "--allow-resolution-mismatch" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # nothing written, no block cache
    assert _last_run().info.status == "FAILED"
    with pytest.warns(UserWarning, match=r"learnt at 20 m \(2\.0x.*running anyway \(--allow-resolution-mismatch\)"):
        argv = _argv(items, dem, out, "--imagery-model", str(model), "--allow-resolution-mismatch")
        assert main(argv) == 0
    s = _summary(out)
    fit = s["segmenter"]["model_fit"]
    assert fit["scene_pixel_m"] == pytest.approx(10.0) and fit["model_gsd_m"] == 20.0 and fit["gsd_ratio"] == 2.0
    assert any("running anyway" in w for w in fit["warnings"]) and s["warnings"] == fit["warnings"]
    report = (out / "report.html").read_text()
    assert "Check before use" in report and "running anyway (--allow-resolution-mismatch)" in report
    run = _last_run()
    assert run.info.status == "FINISHED" and run.data.metrics["gsd_ratio"] == 2.0


def test_a_synthetic_model_warns_when_one_item_is_real(world, models, tmp_path: Path, tracking_uri: str) -> None:
    """The scene is synthetic only when every item says so (the metadata predict_scene reads): one real item in the
    composites makes it real, and the warning lands in the summary and the report."""
    items, dem = world
    data = json.loads(items.read_text())
    data["features"][-1]["properties"].pop("synthetic")  # the last post-event item: a real acquisition
    mixed = items.parent / "items_mixed.json"
    mixed.write_text(json.dumps(data))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="learnt from synthetic data only"):
        assert main(_argv(mixed, dem, out, "--imagery-model", str(models["pre-post"]))) == 0
    s = _summary(out)
    assert any("a demonstration, not a detection" in w for w in s["segmenter"]["model_fit"]["warnings"])
    assert "a demonstration, not a detection" in (out / "report.html").read_text()


def _stats_far_on(model: Path, dst: Path, band: str) -> Path:
    """``model`` with training statistics that every channel fits except ``band`` (far above anything)."""
    names = json.loads((model / "model_meta.json").read_text())["band_order"]
    stats = {b: {"mean": 0.0, "std": 1e6} for b in names}
    stats[band] = {"mean": 50.0, "std": 0.5}
    return _edited(model, dst, band_stats=stats)


def test_channels_far_from_the_training_data_are_named(world, models, tmp_path: Path, tracking_uri: str) -> None:
    items, dem = world
    model = _stats_far_on(models["pre-post"], tmp_path / "m", "B04@post")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"bands far outside the training data .*: B04@post \d") as rec:
        assert main(_argv(items, dem, out, "--imagery-model", str(model))) == 0
    assert not any("B04@pre" in str(w.message) for w in rec)
    fit = _summary(out)["segmenter"]["model_fit"]
    names = json.loads((model / "model_meta.json").read_text())["band_order"]
    assert set(fit["domain_scores"]) == set(names) and fit["domain_bands_far"] == ["B04@post"]
    assert fit["domain_scores"]["B04@post"] > 3 > fit["domain_scores"]["B04@pre"] and fit["domain_score_max"] == 3.0
    assert "B04@post" in (out / "report.html").read_text()
    metrics = _last_run().data.metrics
    assert metrics["domain_score_B04_post"] == pytest.approx(fit["domain_scores"]["B04@post"])
    assert metrics["flagged_share"] == pytest.approx(fit["flagged_share"])


def test_the_domain_sample_does_not_depend_on_the_blocks() -> None:
    """Blocks (in any order, on any engine) sample the same pixels as predict_scene's full-width row blocks."""
    from imagery.inference.fitness import DOMAIN_SAMPLE, DomainCheck, domain_sample

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(3, 50, 70)).astype(np.float32)
    valid = rng.random((50, 70)) > 0.3
    stats = {b: {"mean": 0.0, "std": 1.0} for b in "abc"}
    a, b = (DomainCheck(tuple("abc"), stats, 7 * DOMAIN_SAMPLE) for _ in range(2))  # every 7th pixel of the grid
    assert a.step == 7
    parts = []
    for r in range(0, 50, 16):
        for c in range(0, 70, 24):
            blk = (slice(r, r + 16), slice(c, c + 24))
            parts.append(domain_sample(raw[:, blk[0], blk[1]], valid[blk], step=7, row_off=r, col_off=c, grid_width=70))
    for part in reversed(parts):
        a.add_sample(part)
    for r in range(0, 50, 10):  # predict_scene's way: full-width row blocks, top to bottom
        b.add(raw[:, r : r + 10], valid[r : r + 10])
    whole = domain_sample(raw, valid, step=7)
    assert sorted(np.concatenate(parts, axis=1)[0].tolist()) == sorted(whole[0].tolist())
    assert whole.shape[1] == int(valid.ravel()[::7].sum()) and a.scores() == b.scores()


def test_a_model_that_flags_everything_warns(world, models, tmp_path: Path, tracking_uri: str) -> None:
    items, dem = world
    model = _edited(models["pre-post"], tmp_path / "m", threshold=0.0)  # every probability is a scar
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"100\.0% of the valid pixels are flagged"):
        assert main(_argv(items, dem, out, "--imagery-model", str(model), "--no-gate")) == 0
    s = _summary(out)
    assert s["segmenter"]["model_fit"]["flagged_share"] == pytest.approx(1.0)
    assert s["segmenter"]["flagged_pixels"] == s["observed_pixels"]


def test_the_quarry_is_a_segmenter_only_candidate(world, models, tmp_path: Path, tracking_uri: str) -> None:
    """The quarry (bare before and after) looks like a scar to the segmenter, but nothing changed there: rejected as
    segmenter-only, never in the inventory; the field is rejected as flat-ground loss."""
    from tests.change.helpers import FIELD, QUARRY
    from tests.change.test_map_event import _in, _pixel

    items, dem = world
    out = tmp_path / "out"
    assert main(_argv(items, dem, out, "--imagery-model", str(models["pre-post"]), "--no-gate")) == 0
    rejected = json.loads((out / "rejected.geojson").read_text())["features"]
    kinds = {f["properties"]["kind"]: f for f in rejected}
    assert set(kinds) == {"flat_loss", "segmenter_only"}, [f["properties"] for f in rejected]
    quarry = kinds["segmenter_only"]["properties"]
    assert _in(_pixel(kinds["segmenter_only"]), QUARRY) and _in(_pixel(kinds["flat_loss"]), FIELD)
    assert quarry["reason"] == "the segmenter sees a scar but nothing changed: older landslide or bare rock"
    assert quarry["p_segmenter"] > 0.5 and abs(quarry["mean_dndvi"]) < 0.05
    assert not any(_in(_pixel(f), QUARRY) for f in json.loads((out / "landslides.geojson").read_text())["features"])
    s = _summary(out)
    assert s["rejected"] == {"flat_loss": 1, "segmenter_only": 1}
    assert (
        "2 candidates rejected: 1 vegetation loss on flat ground, 1 segmenter-only" in (out / "report.html").read_text()
    )
