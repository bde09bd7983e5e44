"""Band sets, ignored label pixels (exact loss and metric formulas on labelled pixels) and GeoTIFF chip folders."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from affine import Affine

from common.cli import UserError, run_main
from common.geo import read_raster
from imagery.data.chips import ChipSpec, load_chips, parse_label_map
from imagery.data.patches import IGNORE
from imagery.inference.metrics import SegmentationCounts
from imagery.inference.postprocess import sweep_thresholds
from imagery.training.losses import LOSSES, FocalLoss, SoftIoULoss, create_loss
from imagery.transforms.features import channel_names, compute_features
from tests.scenes.helpers import write_tif


# ----------------------------------------------------------------------------- band sets
def test_band_subset_channels_leave_out_what_needs_a_missing_band() -> None:
    names = channel_names(23, ["B2", "B3", "B4", "B8", "B11"])
    assert names == (
        "B2",
        "B3",
        "B4",
        "B8",
        "B11",
        "R_mm",
        "G_mm",
        "B_mm",
        "NDVI",
        "VI",
        "gray",
        "blur_box",
        "blur_median",
    )  # the seed's 13-channel deployment set: no NBR without B12
    assert channel_names(21, ["B2", "B3", "B4", "slope"]) == (
        "B2",
        "B3",
        "B4",
        "R_mm",
        "G_mm",
        "B_mm",
        "gray",
        "blur_box",
        "blur_median",
    )
    x = np.random.default_rng(0).random((2, 5, 32, 32)).astype(np.float32)
    full = np.zeros((2, 14, 32, 32), np.float32)
    full[:, [1, 2, 3, 7, 10]] = x
    sub = compute_features(x, 23, bands=("B2", "B3", "B4", "B8", "B11"))
    ref = compute_features(full, 23)
    idx = [channel_names(23).index(n) for n in names]
    np.testing.assert_allclose(sub, ref[:, idx], atol=1e-6)  # the same channels as from all 14 bands


# ----------------------------------------------------------------------------- ignored pixels
def _logits_target() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 4, 5, generator=g)
    target = torch.randint(0, 2, (2, 4, 5), generator=g)
    target[0, :2] = IGNORE
    target[1, :, 3:] = IGNORE
    return logits, target


def test_focal_and_iou_by_hand_on_labelled_pixels() -> None:
    logits, target = _logits_target()
    valid = target != IGNORE
    p = torch.softmax(logits, 1).permute(0, 2, 3, 1)[valid]  # (n, 2), labelled pixels only
    t = target[valid]
    pt = p[torch.arange(len(t)), t].clamp(1e-7, 1 - 1e-7)
    focal = ((1 - pt) ** 2 * -torch.log(pt)).sum() / (len(t) * 2)
    assert FocalLoss()(logits, target).item() == pytest.approx(focal.item(), rel=1e-6)
    y = torch.nn.functional.one_hot(t, 2).float()
    inter = (p * y).sum(0)
    union = (p + y).sum(0) - inter
    iou = (-torch.log((inter + 1e-7) / (union + 1e-7))).mean()
    assert SoftIoULoss()(logits, target).item() == pytest.approx(iou.item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_ignores_unlabelled_pixels(name: str) -> None:
    logits, target = _logits_target()
    logits.requires_grad_(True)
    loss = create_loss(name)(logits, target)
    loss.backward()
    grad = logits.grad.abs().sum(1)
    assert torch.isfinite(loss) and (grad[target == IGNORE] == 0).all()  # ignored pixels take no part
    spatial = ("boundary", "boundary_weighted", "center", "center_weighted", "focal_iou_center")
    if name not in spatial:  # pixelwise/regional: same as the labelled subset
        valid = target != IGNORE
        sel = logits.detach().permute(0, 2, 3, 1)[valid].T[None, :, None, :]  # (1, 2, 1, n)
        same = create_loss(name)(sel, target[valid][None, None, :])
        assert loss.item() == pytest.approx(same.item(), rel=1e-5, abs=1e-7)
    none = torch.full_like(target, IGNORE)
    assert create_loss(name)(logits.detach(), none).item() == 0.0


def test_counts_and_threshold_sweep_skip_ignored_pixels() -> None:
    target = np.array([[1, 0, IGNORE, 1], [0, IGNORE, 1, 0]], np.uint8)
    pred = np.array([[1, 1, 1, 0], [0, 1, 1, 0]], np.uint8)
    c = SegmentationCounts()
    c.update(pred, target)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 2)  # the two ignored pixels (both predicted 1) count nowhere
    c2 = SegmentationCounts()
    c2.update(torch.as_tensor(pred), torch.as_tensor(target))
    assert (c2.tp, c2.fp, c2.fn, c2.tn) == (2, 1, 1, 2)
    _, table = sweep_thresholds(pred.astype(np.float32) * 0.9, target, thresholds=[0.5])
    assert (table.tp[0], table.fp[0], table.fn[0]) == (2, 1, 1)


# ----------------------------------------------------------------------------- chip folders
def _chips(root: Path, *, shift_label: bool = False) -> Path:
    """Two chips (B04,B03,B02,B08 DN): 200x150 and 64x64, sparse labels 0=unlabelled, 1=ground, 2=landslide."""
    rng = np.random.default_rng(1)
    for stem, (h, w) in (("a", (150, 200)), ("b", (64, 64))):
        t = Affine(10, 0, 500000 + (0 if stem == "a" else 5000), 0, -10, 2800000)
        img = rng.integers(500, 3000, (4, h, w)).astype(np.uint16)
        lab = np.zeros((h, w), np.uint8)
        lab[::7, ::5] = 1
        lab[10:20, 10:30] = 2
        img[0, 10:20, 10:30] = 1000
        write_tif(root / "images" / f"{stem}.tif", img, "EPSG:32629", t)
        lt = Affine(10, 0, t.c + (10 if shift_label and stem == "b" else 0), 0, -10, t.f)
        write_tif(root / "labels" / f"{stem}.tif", lab, "EPSG:32629", lt)
    return root


def test_chips_every_labelled_pixel_once_in_model_units(tmp_path: Path) -> None:
    root = _chips(tmp_path / "chips")
    spec = ChipSpec(
        image_bands=("B04", "green", "B02", "nir"), image_scale="dn", label_map="0:ignore,1:0,2:1", tile=128
    )
    ps = load_chips(root, spec)
    assert ps.bands == ("B2", "B3", "B4", "B8") and ps.images.shape[1:] == (4, 128, 128)
    labelled = sum(int((read_raster(p).array > 0).sum()) for p in sorted((root / "labels").iterdir()))
    assert labelled == 1402
    assert int((ps.masks != IGNORE).sum()) == labelled  # none dropped, none counted twice
    assert int((ps.masks == 1).sum()) == 400
    assert sorted(set(ps.groups.tolist())) == [0, 1] and len(ps) == 5  # 2x2 tiles of chip a, 1 padded chip b
    red = ps.images[:, 2][ps.masks == 1]
    np.testing.assert_allclose(red, 1000 / 445.17289745, rtol=1e-5)  # DN 1000 -> reflectance 0.1 -> L4S units


def test_chip_errors_name_the_file(tmp_path: Path) -> None:
    root = _chips(tmp_path / "chips", shift_label=True)
    spec = ChipSpec(image_bands=("B4", "B3", "B2", "B8"), label_map="0:ignore,1:0,2:1")
    with pytest.raises(UserError, match=r"labels/b.tif: label grid .* differs from its image b.tif"):
        load_chips(root, spec)
    root = _chips(tmp_path / "c2")
    with pytest.raises(UserError, match=r"label value\(s\) \[2\] not in the label map"):
        load_chips(root, ChipSpec(image_bands=("B4", "B3", "B2", "B8")))
    with pytest.raises(UserError, match="has 4 band.* --image-bands names 3"):
        load_chips(root, ChipSpec(image_bands=("B4", "B3", "B2"), label_map="0:ignore,1:0,2:1"))
    assert parse_label_map("0:ignore,1:0,2:1") == {0: IGNORE, 1: 0, 2: 1}


@pytest.mark.slow
def test_train_and_evaluate_cli_on_sparse_chips(tmp_path: Path, tracking_uri: str, capsys) -> None:
    from pipelines import evaluate_imagery, train_imagery

    root = _chips(tmp_path / "chips")
    common = ["--image-bands", "B04,B03,B02,B08", "--image-scale", "dn", "--label-map", "0:ignore,1:0,2:1"]
    result = train_imagery.run(
        [
            "--data",
            str(root),
            *common,
            "--model",
            "small_rau_net1",
            "--width",
            "4",
            "--head",
            "mono",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--val-fraction",
            "0.5",
            "--no-progress",
            "--overlays",
            "0",
            "--tracking-uri",
            tracking_uri,
        ]
    )
    local = mlflow.artifacts.download_artifacts(f"{result.model_uris[0]}/model_meta.json", dst_path=str(tmp_path))
    meta = json.loads(Path(local).read_text())
    assert meta["band_order"] == ["B2", "B3", "B4", "B8"] and meta["units"] == "l4s"
    assert meta["model_kwargs"]["in_channels"] == len(meta["channels"]) == 11  # no NBR/VI without B11/B12
    capsys.readouterr()
    code = run_main(
        evaluate_imagery.main,
        ["--model", result.model_uris[0], "--data", str(root), *common, "--tracking-uri", tracking_uri],
    )
    assert code == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["labelled_pixels"] == int(
        (load_chips(root, ChipSpec(("B4", "B3", "B2", "B8"), "dn", "0:ignore,1:0,2:1")).masks != IGNORE).sum()
    )
    assert scores["tp"] + scores["fp"] + scores["fn"] + scores["tn"] == scores["labelled_pixels"]
    # a band the chips lack
    code = run_main(
        train_imagery.main,
        ["--data", str(root), *common, "--bands", "B2,B11", "--epochs", "1", "--tracking-uri", tracking_uri],
    )
    assert code == 2 and "the data has no B11" in capsys.readouterr().err


def test_sparse_chips_train_with_their_band_set(tmp_path: Path, tracking_uri: str) -> None:
    """The library path of train_imagery --data CHIPS (no MLflow model flavour): bands and channels follow the chips."""
    from common.tracking import tracked_run
    from imagery.training import DataConfig, ModelConfig, TrainConfig, run_folds

    root = _chips(tmp_path / "chips")
    cfg = TrainConfig(
        model=ModelConfig("small_rau_net1", 23, "mono", width=4),
        data=DataConfig(
            path=str(root),
            image_bands=["B04", "B03", "B02", "B08"],
            image_scale="dn",
            label_map="0:ignore,1:0,2:1",
            val_fraction=0.5,
        ),
        epochs=1,
        batch_size=2,
        progress=False,
        n_overlays=0,
    ).validate()
    with tracked_run("chips", cfg):
        res = run_folds(cfg, "chips", log_flavour=False)
    fold = res.folds[0]
    assert np.isfinite(fold.val_metrics["ls_f1"]) and fold.history[-1]["train_loss"] > 0
    run = mlflow.get_run(res.run_id)
    assert run.data.params["bands"] == "B2,B3,B4,B8" and run.data.params["in_channels"] == "11"
