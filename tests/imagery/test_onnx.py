"""ONNX Runtime serving: the exported network gives the torch probabilities (within 1e-4) on the real
L4S patches, through the same pre- and post-processing; int8 keeps the landslide F1 within 0.02."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import run_main
from imagery.data import load_patches
from imagery.inference import Segmenter, SegmenterMeta, load_segmenter, save_segmenter_files
from imagery.inference.metrics import segmentation_metrics
from imagery.inference.onnx import export_onnx, load_onnx_segmenter, read_meta
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
    assert read_meta(exported["fp32"]).channel_set == 23 and onnx_seg.digest != exported["torch"].digest


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
