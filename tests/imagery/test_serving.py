"""Segmenter logging to MLflow and loading back (state dict + JSON metadata, never unpickled)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from imagery.data import BANDS
from imagery.inference import Segmenter, SegmenterMeta, load_segmenter, log_segmenter, save_segmenter_files
from imagery.inference.serving import META_NAME
from imagery.models import create_model


def _tiny(seed: int = 0, channel_set: int = 17, head: str = "dual") -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    kw = {"in_channels": channel_set, "num_classes": 2, "head": head, "base_width": 4}
    return create_model("rau_net1", **kw).eval(), kw


def _patches(n: int = 3, size: int = 64) -> np.ndarray:
    from imagery.data.synthetic import synth_patch

    rng = np.random.default_rng(5)
    return np.stack([synth_patch(rng, has_landslide=True, size=size)[0] for _ in range(n)])


def test_threshold_normaliser_channel_set_round_trip_through_mlflow(tracking_uri: str, tmp_path: Path) -> None:
    from common.tracking import tracked_run

    model, kw = _tiny()
    meta = SegmenterMeta(
        model_name="rau_net1",
        model_kwargs=kw,
        channel_set=17,
        threshold=0.73,
        normalizer=None,
        band_order=list(BANDS),
        head="dual",
        tta="rot4",
    )
    with tracked_run("serving-test", {"a": 1}) as run:
        uri = log_segmenter(model, meta, input_example=np.zeros((1, 17, 64, 64), np.float32))
    assert uri == f"runs:/{run.info.run_id}/segmenter"
    for u in (uri, f"runs:/{run.info.run_id}"):
        seg = load_segmenter(u, device="cpu")
        assert seg.threshold == pytest.approx(0.73)
        assert seg.channel_set == 17
        assert seg.meta.tta == "rot4" and seg.meta.head == "dual" and seg.meta.band_order[3] == "B4"
        for k, v in model.state_dict().items():
            assert torch.equal(seg.model.state_dict()[k], v), k
    # the PyTorch flavour is logged too, with the same files inside it
    logged = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert logged and logged[0].source_run_id == run.info.run_id
    seg2 = load_segmenter(f"models:/{logged[0].model_id}", device="cpu")
    assert seg2.threshold == pytest.approx(0.73)


def test_normaliser_travels_with_the_model(tmp_path: Path) -> None:
    normalize = pytest.importorskip("imagery.transforms.normalize")
    from imagery.transforms import Preprocessor

    raw = _patches()
    feats = Preprocessor(17).transform_all(raw, torch.device("cpu")).numpy()
    norm = normalize.Normalizer(mode="fold")
    norm.fit(feats)
    model, kw = _tiny()
    meta = SegmenterMeta("rau_net1", kw, 17, threshold=0.4, normalizer=norm.to_dict())
    save_segmenter_files(model, meta, tmp_path / "seg")
    stored = json.loads((tmp_path / "seg" / META_NAME).read_text())
    assert stored["normalizer"] == json.loads(json.dumps(norm.to_dict()))
    seg = load_segmenter(str(tmp_path / "seg"), device="cpu")
    x = seg.preprocess(torch.from_numpy(raw))
    expected = torch.as_tensor(np.asarray(norm(feats), dtype=np.float32))
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)


def test_segmenter_predict_matches_manual_pipeline(tmp_path: Path) -> None:
    from imagery.transforms.features import compute_features

    model, kw = _tiny(head="multires")
    seg = Segmenter(model, SegmenterMeta("rau_net1", kw, 17, threshold=0.6), device="cpu")
    raw = _patches()
    out = seg.predict(raw, batch_size=2)
    assert out["prob"].shape == (3, 64, 64) and out["prob"].dtype == np.float32
    assert out["mask"].dtype == np.uint8 and out["patch_prob"].shape == (3,)
    with torch.no_grad():
        x = torch.as_tensor(compute_features(raw, 17))
        manual = torch.softmax(model(x)["out"], 1)[:, 1].numpy()
    np.testing.assert_allclose(out["prob"], manual, atol=2e-4)
    np.testing.assert_array_equal(out["mask"], (out["prob"] > 0.6).astype(np.uint8))
    with pytest.raises(ValueError, match="expected \\(N, 14, H, W\\)"):
        seg.predict(raw[:, :5])


def test_load_segmenter_bad_uris(tmp_path: Path, tracking_uri: str) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_segmenter(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model_meta.json"):
        load_segmenter(str(tmp_path / "empty"))
    model, kw = _tiny()
    save_segmenter_files(model, SegmenterMeta("rau_net1", kw, 17), tmp_path / "seg")
    (tmp_path / "seg" / "state_dict.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable state dict"):
        load_segmenter(str(tmp_path / "seg"))
