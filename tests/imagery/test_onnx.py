"""ONNX Runtime serving: the exported network gives the torch probabilities (within 1e-4) on the real
L4S patches, through the same pre- and post-processing; int8 keeps the landslide F1 within 0.02."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import onnx
import pytest
import torch

from common.cli import UserError, run_main
from fusion.demo.synthetic_scene import write_synthetic_scene
from imagery.data import load_patches
from imagery.inference import Segmenter, SegmenterMeta, load_segmenter, save_segmenter_files
from imagery.inference.metrics import segmentation_metrics
from imagery.inference.onnx import META_KEY, export_onnx, load_onnx_segmenter, read_meta
from imagery.models import create_model
from imagery.training import TrainConfig, Trainer, build_criterion
from imagery.transforms import Preprocessor
from tests.conftest import shared_dataset

KW = {"in_channels": 23, "num_classes": 2, "head": "multires", "base_width": 8}
META = SegmenterMeta("small_rau_net1", KW, 23, threshold=0.5, head="multires")


def _patches():
    return load_patches(shared_dataset("landslide4sense_camduc"), layout="plain", require_masks=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small RAU-Net 1 (width 8, 23 channels, multi-resolution head) and its fp32 ONNX export."""
    patches = _patches()
    torch.manual_seed(0)
    model = create_model("small_rau_net1", **KW)
    tmp = tmp_path_factory.mktemp("onnx")
    save_segmenter_files(model, META, tmp / "segmenter")
    fp32 = export_onnx(model, META, tmp / "model.onnx")
    return {"patches": patches, "torch": Segmenter(model, META, "cpu"), "fp32": fp32, "tmp": tmp}


@pytest.mark.real_data
def test_onnx_matches_torch_on_real_patches(exported: dict) -> None:
    images = np.asarray(exported["patches"].images)
    onnx_seg = load_onnx_segmenter(exported["fp32"])
    for opts in ({}, {"tta": "rot4", "vote": True}):
        a, b = exported["torch"].predict(images, **opts), onnx_seg.predict(images, **opts)
        assert np.abs(a["prob"] - b["prob"]).max() < 1e-4
        assert np.abs(a["patch_prob"] - b["patch_prob"]).max() < 1e-4
        assert np.array_equal(a["mask"], b["mask"])
    assert read_meta(exported["fp32"]).channel_set == 23
    # the converted model is its source model: the same digest, so a fuser trained on it accepts it (issue 17)
    assert onnx_seg.digest == exported["torch"].digest


@pytest.mark.real_data
def test_onnx_runs_any_tile_size(exported: dict) -> None:
    """Dynamic height and width: 64 and 256 px tiles give the torch probabilities (issue 17, item 11)."""
    images = np.asarray(exported["patches"].images[:4])
    big = np.concatenate([np.concatenate(list(images[:2]), axis=2), np.concatenate(list(images[2:4]), axis=2)], axis=1)
    onnx_seg = load_onnx_segmenter(exported["fp32"])
    assert onnx_seg.fixed_size is None
    for x in (images[:, :, :64, :64], big[None]):
        a, b = exported["torch"].predict(x)["prob"], onnx_seg.predict(x)["prob"]
        assert a.shape == b.shape == (len(x), *x.shape[2:]) and np.abs(a - b).max() < 1e-4


def _rewrite_props(src: Path, dst: Path, edit) -> Path:
    model = onnx.load(str(src))
    props = {m.key: m.value for m in model.metadata_props}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, edit(props))
    onnx.save(model, str(dst))
    return dst


@pytest.mark.real_data
def test_truncated_onnx_metadata_is_a_one_line_error(exported: dict, tmp_path: Path, tracking_uri: str, capsys) -> None:
    from pipelines import predict_scene

    bad = _rewrite_props(exported["fp32"], tmp_path / "bad.onnx", lambda p: {**p, META_KEY: p[META_KEY][:40]})
    with pytest.raises(UserError, match="segmenter metadata .* is not valid JSON"):
        load_onnx_segmenter(bad)
    scene = write_synthetic_scene(tmp_path / "scene", 96, cloud_fraction=0.0)
    argv = ["--scene", str(scene), "--model", str(bad), "--out", str(tmp_path / "o"), "--tracking-uri", tracking_uri]
    assert run_main(predict_scene.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.onnx" in err and "not valid JSON" in err


@pytest.mark.real_data
def test_predict_scene_with_an_onnx_model_and_any_tile(exported: dict, tmp_path: Path, tracking_uri: str) -> None:
    from pipelines import predict_scene

    scene = write_synthetic_scene(tmp_path / "scene", 192, cloud_fraction=0.0)
    argv = ["--scene", str(scene), "--dem", str(scene / "dem.tif"), "--model", str(exported["fp32"])]
    for tile in ("64", "128"):
        out = tmp_path / f"o{tile}"
        more = ["--tile", tile, "--overlap", "32", "--out", str(out), "--no-progress", "--tracking-uri", tracking_uri]
        assert run_main(predict_scene.main, [*argv, *more]) == 0
        assert json.loads((out / "summary.json").read_text())["tile"] == int(tile)


@pytest.mark.real_data
def test_an_old_fixed_size_onnx_file_is_tiled_at_its_size(exported: dict, tmp_path: Path, tracking_uri: str) -> None:
    """Files exported before dynamic sizes: scene prediction tiles at their size; a wrong patch size is a
    one-line error; their digest stays the file's sha256 (no stored source digest)."""
    from imagery.inference.onnx import _export, _output_names, _Outputs  # noqa: PLC0415 - the old export

    net = exported["torch"].model.float().to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, 23, 128, 128)
    names = _output_names(net, example)
    _export(
        _Outputs(net, names).eval(), example, tmp_path / "fixed_raw.onnx", names, {0: torch.export.Dim("b", min=1)}, 18
    )
    meta = json.dumps(META.to_dict())
    old = _rewrite_props(tmp_path / "fixed_raw.onnx", tmp_path / "old.onnx", lambda p: {META_KEY: meta})
    seg = load_onnx_segmenter(old)
    assert seg.fixed_size == 128 and len(seg.digest) == 64 and seg.digest != exported["torch"].digest
    images = np.asarray(exported["patches"].images[:2])
    with pytest.raises(UserError, match="takes 128x128 px tiles .* pass --tile 128"):
        seg.predict(images[:, :, :64, :64])
    scene = np.concatenate(list(images), axis=2)  # (14, 128, 256)
    res = predict_inputs_like(seg, scene, tmp_path)
    assert res.shape == (128, 256) and np.isfinite(res).all()


def predict_inputs_like(seg: Segmenter, scene: np.ndarray, tmp_path: Path) -> np.ndarray:
    """``predict_imagery`` on a scene array with ``--tile 64``: the fixed-size model tiles at 128 instead."""
    from imagery.inference.config import PredictConfig  # noqa: PLC0415
    from imagery.inference.predict import predict_inputs  # noqa: PLC0415

    np.save(tmp_path / "scene.npy", np.moveaxis(scene, 0, -1))
    cfg = PredictConfig(input=str(tmp_path / "scene.npy"), out=str(tmp_path / "pred"), tile=64, overlap=16)
    with mock.patch("imagery.inference.predict.load_segmenter", return_value=seg), mlflow.start_run():
        predict_inputs(cfg)
    return np.load(tmp_path / "pred" / "prob_scene.npy")


def test_assess_takes_a_tile_flag() -> None:
    from pipelines import assess

    args = assess.COMMAND.parse(
        [
            "--bbox",
            "0",
            "0",
            "1",
            "1",
            "--date",
            "2024-01-01",
            "--imagery-model",
            "m.onnx",
            "--out",
            "o",
            "--tile",
            "64",
        ]
    )
    assert assess.config_from_args(args).tile == 64


@pytest.mark.slow
@pytest.mark.real_data
def test_int8_keeps_the_landslide_f1(tmp_path: Path) -> None:
    """int8 against fp32 on a model fitted briefly on the 11 real patches (random weights would make the
    F1 comparison meaningless)."""
    patches = _patches()
    x = Preprocessor(23)(np.asarray(patches.images), torch.device("cpu"))
    cfg = TrainConfig(epochs=6, batch_size=4, progress=False, device="cpu", bn_momentum=0.1)
    cfg.optim.lr, cfg.optim.schedule = 3e-3, "constant"
    torch.manual_seed(0)
    model = create_model("small_rau_net1", **KW)
    Trainer(cfg, model, build_criterion("focal_iou", "multires"), x, patches.masks, x, patches.masks).fit()
    images = np.asarray(patches.images)
    fp32 = load_onnx_segmenter(export_onnx(model, META, tmp_path / "m.onnx")).predict(images)
    int8_path = export_onnx(model, META, tmp_path / "m8.onnx", int8=True, calibration=x.numpy())
    int8 = load_onnx_segmenter(int8_path).predict(images)
    f1_fp32 = segmentation_metrics(fp32["prob"], patches.masks, 0.5)["ls_f1"]
    f1_int8 = segmentation_metrics(int8["prob"], patches.masks, 0.5)["ls_f1"]
    assert f1_fp32 > 0.05  # the model learned something, so the comparison means something
    assert abs(f1_int8 - f1_fp32) <= 0.02


@pytest.mark.real_data
def test_export_command_and_onnx_runtime_flag(exported: dict, tracking_uri: str, capsys) -> None:
    from pipelines import export_imagery

    out = Path(exported["tmp"]) / "cli.onnx"
    assert run_main(export_imagery.main, ["--model", str(Path(exported["tmp"]) / "segmenter"), "--out", str(out)]) == 0
    assert "out: " in capsys.readouterr().out and out.is_file()
    seg = load_segmenter(str(out))  # an .onnx file is a model URI too
    ref = exported["torch"].predict(np.asarray(exported["patches"].images[:2]))
    assert np.abs(seg.predict(np.asarray(exported["patches"].images[:2]))["prob"] - ref["prob"]).max() < 1e-4
    assert run_main(export_imagery.main, ["--model", str(out), "--out", str(out.with_suffix(".txt"))]) == 2
    assert "expected a path ending in .onnx" in capsys.readouterr().err


def test_int8_calibration_inputs_follow_the_model_band_set() -> None:
    """A model trained on a band subset is calibrated on inputs with its own channels (not the 14 bands')."""
    from imagery.inference.onnx import calibration_inputs  # noqa: PLC0415 - the one function under test
    from imagery.transforms.features import channel_names  # noqa: PLC0415

    bands = ["B2", "B3", "B4", "B8", "B11", "B12"]
    channels = channel_names(23, bands)
    kw = {"in_channels": len(channels), "num_classes": 2, "head": "mono", "base_width": 4}
    meta = SegmenterMeta("small_rau_net1", kw, 23, threshold=0.5, band_order=bands, head="mono", channels=channels)
    x = calibration_inputs(meta, n=4)
    assert x.shape[:2] == (4, len(channels)) and len(channels) < 23
    assert np.isfinite(x).all()


def test_a_band_subset_model_exports_and_matches_torch(tmp_path: Path) -> None:
    """A model on the L2A bands without B10 has 22 input channels, not its channel set's 23: the export took its
    example input from the channel set and failed (so --runtime onnx and export_imagery failed on such models)."""
    from tests.scenes.helpers import L2A_BANDS, tiny_model  # noqa: PLC0415

    folder = tiny_model(tmp_path / "seg", L2A_BANDS, prob=None)
    seg = load_segmenter(str(folder), device="cpu")
    assert len(seg.meta.channels) < seg.meta.channel_set  # the case: fewer channels than the set names
    onnx_seg = load_onnx_segmenter(export_onnx(seg.model, seg.meta, tmp_path / "model.onnx"))
    raw = np.random.default_rng(0).uniform(0.2, 2.0, (2, len(seg.bands), 64, 64)).astype(np.float32)
    a, b = seg.predict(raw)["prob"], onnx_seg.predict(raw)["prob"]
    assert a.shape == b.shape == (2, 64, 64) and np.abs(a - b).max() < 1e-4


def test_the_engine_measures_onnx_sessions_with_their_arenas_shrunk(exported: dict) -> None:
    """While the engine times sessions side by side each gives its memory arena back after a run (the same
    results); the network it hands over runs with its arena kept."""
    from imagery.inference import engine
    from imagery.inference.onnx import OnnxNetwork

    seg = exported["torch"]
    net = OnnxNetwork(exported["fp32"])
    x = engine.reference_inputs(seg, n=2)
    plain = net(x)["out"]
    net.shrink_arena = True
    np.testing.assert_array_equal(net(x)["out"], plain)
    seen: list[bool] = []

    def build() -> engine.EngineNetwork:
        onnx_net = OnnxNetwork(exported["fp32"])
        real = onnx_net.session.run

        def run(names, feed, options=None):
            seen.append(options is not None)
            return real(names, feed, options)

        onnx_net.session.run = run
        return engine.EngineNetwork("onnx-fp32", onnx_net, digest=seg.digest, device=torch.device("cpu"))

    cands = [
        engine.Candidate("torch-fp32", lambda: engine.build_path(seg, "torch-fp32")),
        engine.Candidate("onnx-fp32", build),
    ]
    built: dict = {}
    res = engine.measure_candidates(cands, x, x, threshold=0.5, gflop=1.0, rounds=1, built=built)
    assert res["onnx-fp32"]["passed"] and seen and all(seen)  # every measuring run shrank the arena
    assert built["onnx-fp32"].fn.shrink_arena is False
    built["onnx-fp32"](x)
    assert seen[-1] is False
