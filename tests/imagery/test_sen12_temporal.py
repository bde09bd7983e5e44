"""Sen12Landslides temporal channel sets (imagery.data.sen12_temporal) on the real Emilia-Romagna sample, and the
path from a folder of .nc patches through train_imagery to a model that says it needs a time series."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from common.cli import UserError
from imagery.data.sen12_temporal import is_sen12_folder, load_sen12_temporal
from imagery.data.sen12landslides import Sen12LandslidesS2
from tests.conftest import shared_dataset

SAMPLE = "sen12landslides_italy_4120"
S2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def _expected(temporal: str, sensor: str) -> list[str]:
    whens = ["post"] if temporal == "post" else ["pre", "post"]
    diff = temporal == "pre-post-diff"
    names: list[str] = []
    if "s2" in sensor:
        for b in S2:
            names += [f"{b}@{w}" for w in whens] + ([f"{b}@diff"] if diff else [])
        names += ["NDVI@diff"] if diff else []
    if "s1" in sensor:
        for b in ("VV", "VH"):
            names += [f"{b}_dB@{w}" for w in whens] + ([f"{b}@logratio"] if diff else [])
    return [*names, "slope"]


@pytest.mark.parametrize("temporal", ["post", "pre-post", "pre-post-diff"])
@pytest.mark.parametrize("sensor", ["s2", "s1", "s2+s1"])
def test_channel_sets_names_counts_mask_and_no_nan(temporal: str, sensor: str) -> None:
    root = shared_dataset(SAMPLE)
    ps = load_sen12_temporal(root, temporal, sensor)
    names = _expected(temporal, sensor)
    assert list(ps.bands) == names
    assert ps.images.shape == (1, len(names), 128, 128) and ps.images.dtype == np.float32
    assert np.isfinite(ps.images).all()  # nothing non-finite reaches a model
    mask = Sen12LandslidesS2()(root / "italy_s2_4120.nc").mask
    np.testing.assert_array_equal(ps.masks[0], mask)
    assert int(ps.masks.sum()) == 631 and ps.ids.tolist() == [4120] and ps.gsd_m == 10.0


def test_channel_values_are_the_composites_and_their_differences() -> None:
    root = shared_dataset(SAMPLE)
    ps = load_sen12_temporal(root, "pre-post-diff", "s2+s1")
    img = dict(zip(ps.bands, ps.images[0], strict=True))
    p = Sen12LandslidesS2()(root / "italy_s2_4120.nc")
    post = p.composite("B04", p.post)
    ok = np.isfinite(post)
    np.testing.assert_allclose(img["B04@post"][ok], post[ok], rtol=1e-6)
    both = ok & np.isfinite(p.composite("B04", p.pre))  # elsewhere each channel is filled with its own median
    assert 0.99 < both.mean() < 1
    np.testing.assert_allclose(img["B04@diff"][both], (img["B04@post"] - img["B04@pre"])[both], atol=1e-6)
    np.testing.assert_allclose(img["VV@logratio"], img["VV_dB@post"] - img["VV_dB@pre"], atol=1e-5)
    assert (img["VV_dB@post"] < 5).all() and (img["VV_dB@post"] > -60).all()  # dB, not linear power
    # the landslides lost vegetation: dNDVI is lower inside the mask than outside
    dndvi = img["NDVI@diff"]
    assert dndvi[ps.masks[0] == 1].mean() < dndvi[ps.masks[0] == 0].mean()
    assert 0 <= img["slope"].min() and img["slope"].max() < 90


def test_split_files_and_norm_statistics_are_used(tmp_path: Path) -> None:
    src = shared_dataset(SAMPLE) / "italy_s2_4120.nc"
    (tmp_path / "italy_s2_4120.nc").symlink_to(src)
    (tmp_path / "italy_s2_7.nc").symlink_to(src)
    assert is_sen12_folder(tmp_path) and not is_sen12_folder(tmp_path / "italy_s2_7.nc")
    (tmp_path / "train.txt").write_text("italy_s2_7.nc\n")
    raw = load_sen12_temporal(tmp_path, "post", "s2", split="train")
    assert raw.ids.tolist() == [7]
    (tmp_path / "norm_data.json").write_text('{"B04": {"mean": 0.1, "std": 0.5}}')
    normed = load_sen12_temporal(tmp_path, "post", "s2", split="train")
    i = raw.bands.index("B04@post")
    np.testing.assert_allclose(normed.images[0, i], (raw.images[0, i] - 0.1) / 0.5, rtol=1e-5)
    np.testing.assert_array_equal(normed.images[0, i + 1], raw.images[0, i + 1])  # B05: no statistics
    with pytest.raises(UserError, match="--temporal"):
        load_sen12_temporal(tmp_path, "pre", "s2")
    with pytest.raises(UserError, match="no Sentinel-1 twin"):
        load_sen12_temporal(tmp_path, "post", "s1")
    # pipelines.fetch_dataset's layout: s2/, s1asc/, s1dsc/
    fetched = tmp_path / "fetched"
    for sub, name in (("s2", "italy_s2_4120.nc"), ("s1asc", "italy_s1asc_4120.nc")):
        (fetched / sub).mkdir(parents=True)
        (fetched / sub / name).symlink_to(src.parent / name)
    assert is_sen12_folder(fetched)
    assert load_sen12_temporal(fetched, "pre-post", "s2+s1").images.shape == (1, 25, 128, 128)


def test_published_task_files_splits_and_norm_lists(tmp_path: Path) -> None:
    """The formats the dataset's repository publishes: ``<task>/s2/data_paths.json`` ({"train": [paths], ...}) and
    ``norm_data.json`` ({"mean": [B02..B12, DEM], "std": [...]}, stored units 0..10000)."""

    src = shared_dataset(SAMPLE) / "italy_s2_4120.nc"
    (tmp_path / "s2").mkdir()
    for name in ("italy_s2_4120.nc", "italy_s2_7.nc"):
        (tmp_path / "s2" / name).symlink_to(src)
    task = tmp_path / "tasks" / "S12LS-LD" / "s2"
    task.mkdir(parents=True)
    (task / "data_paths.json").write_text(
        json.dumps({"train": ["data/final/s2/italy_s2_7.nc"], "val": ["data/final/s2/italy_s2_4120.nc"], "test": []})
    )
    raw = load_sen12_temporal(tmp_path, "post", "s2", split="train")
    assert raw.ids.tolist() == [7]
    assert load_sen12_temporal(tmp_path, "post", "s2", split="validation").ids.tolist() == [4120]
    mean = [1000.0 + 100 * i for i in range(11)]
    std = [2000.0] * 11
    (task / "norm_data.json").write_text(json.dumps({"mean": mean, "std": std}))
    normed = load_sen12_temporal(tmp_path, "post", "s2", split="train")
    i = raw.bands.index("B04@post")  # third band: mean 1200, std 2000 in stored units
    np.testing.assert_allclose(normed.images[0, i], (raw.images[0, i] - 0.12) / 0.2, rtol=1e-5, atol=1e-6)
    (task / "norm_data.json").write_text(json.dumps({"mean": [1.0] * 5, "std": [1.0] * 5}))
    with pytest.raises(UserError, match="norm_data.json.*5 values"):
        load_sen12_temporal(tmp_path, "post", "s2")
    (task / "data_paths.json").write_text(json.dumps({"train": []}))
    with pytest.raises(UserError, match="data_paths.json.*'test'"):
        load_sen12_temporal(tmp_path, "post", "s2", split="test")


def test_path_train_on_the_one_real_patch_model_says_temporal(tmp_path: Path, tracking_uri: str, capsys) -> None:
    """PATH TEST, not a model test: the single real patch, linked twice, is both train and validation set."""
    from common.model_card import CARD_ARTIFACT
    from imagery.inference.serving import load_segmenter
    from pipelines.train_imagery import run

    src = shared_dataset(SAMPLE) / "italy_s2_4120.nc"
    data = tmp_path / "sen12"
    data.mkdir()
    for i in (1, 2):
        (data / f"italy_s2_{i}.nc").symlink_to(src)
    # the dataset's published norm statistics (B02..B12, DEM; stored units): stored with the model
    (data / "norm_data.json").write_text(json.dumps({"mean": [1000.0] * 11, "std": [2000.0] * 11}))
    out = run(
        ["--data", str(data), "--temporal", "pre-post-diff", "--width", "4", "--epochs", "1", "--batch-size", "1"]
        + ["--val-fraction", "0.5", "--device", "cpu", "--no-progress", "--overlays", "0", "--no-log-flavour"]
        + ["--no-augment", "--bn-momentum", "0.1"]
    )
    seg = load_segmenter(out.model_uris[0], device="cpu")
    assert seg.meta.temporal == "pre-post-diff" and seg.meta.sensor == "s2"
    assert seg.meta.channel_norm["B04"] == pytest.approx({"mean": 0.1, "std": 0.2})  # applied again by map_event
    assert seg.bands == tuple(_expected("pre-post-diff", "s2")) and seg.meta.channels == list(seg.bands)
    x = load_sen12_temporal(data, "pre-post-diff", "s2").images
    pred = seg.predict(x[:1])
    assert pred["prob"].shape == (1, 128, 128) and np.isfinite(pred["prob"]).all()
    with pytest.raises(UserError, match="temporal set 'pre-post-diff'"):
        seg.predict(np.zeros((1, 14, 128, 128), np.float32))  # a single-date L4S patch
    with pytest.raises(UserError, match="single-date"):
        seg.meta.require_single_date("--scene x")
    from common.cli import run_main
    from pipelines import predict_scene

    scene_args = ["--scene", str(tmp_path), "--model", out.model_uris[0], "--out", str(tmp_path / "o")]
    assert run_main(predict_scene.main, scene_args) == 2  # a single-date scene is refused in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "temporal set 'pre-post-diff'" in err[0], err
    from pipelines import evaluate_imagery

    bare = tmp_path / "bare"  # the same patches without the norm statistics the model was trained with
    bare.mkdir()
    (bare / "italy_s2_1.nc").symlink_to(src)
    ev = ["--data", str(bare), "--model", out.model_uris[0], "--device", "cpu", "--runtime", "torch"]
    assert run_main(evaluate_imagery.main, ev) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "norm statistics (none) differ" in err[0], err
    client = mlflow.MlflowClient(tracking_uri=mlflow.get_tracking_uri(), registry_uri=mlflow.get_tracking_uri())
    run_id = out.model_uris[0][len("runs:/") :].split("/", 1)[0]
    names = {a.path for a in client.list_artifacts(run_id)}
    assert CARD_ARTIFACT in names  # training registers the model with its card
    card = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CARD_ARTIFACT)).read_text()
    assert "temporal set: pre-post-diff" in card
