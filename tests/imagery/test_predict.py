"""Tiling/stitching of scenes, input reading and the predict CLI (synthetic and real unlabelled patches)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from imagery.inference.predict import blend_weights, predict_scene, read_inputs, tile_starts
from tests.conftest import shared_dataset


def _pointwise(batch: np.ndarray) -> np.ndarray:
    """A translation-equivariant 'model': a per-pixel logistic of two bands."""
    return 1.0 / (1.0 + np.exp(-(batch[:, 3] - 0.5 * batch[:, 7])))


@pytest.mark.parametrize("length,tile,overlap", [(128, 128, 32), (300, 128, 32), (129, 128, 0), (500, 64, 16)])
def test_tile_starts_cover_with_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, dtype=int)
    for s in starts:
        assert 0 <= s <= length - tile
        covered[s : s + tile] += 1
    assert covered.min() >= 1
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_blend_weights_positive_and_peak_in_centre() -> None:
    w = blend_weights(128, 32)
    assert w.shape == (128, 128) and w.min() > 0
    assert w[64, 64] == pytest.approx(1.0) and w[0, 0] < w[10, 10] < w[64, 64]


@pytest.mark.parametrize("shape", [(14, 300, 200), (14, 128, 129), (14, 90, 150)])
def test_tiled_equals_whole_for_equivariant_model(shape: tuple[int, int, int]) -> None:
    scene = np.random.default_rng(0).normal(1.0, 0.5, size=shape).astype(np.float32)
    calls: list[tuple[int, ...]] = []

    def fn(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return _pointwise(batch)

    tiled = predict_scene(fn, scene, tile=128, overlap=32, batch_size=4)
    whole = _pointwise(scene[None])[0]
    assert tiled.shape == shape[1:]
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)
    assert all(c[1:] == (14, 128, 128) for c in calls)


def test_blending_averages_overlapping_tiles() -> None:
    """A model whose output depends on the tile position: overlaps are averaged, not overwritten."""
    scene = np.zeros((14, 128, 192), dtype=np.float32)
    scene[0] = np.arange(192)[None, :]
    out = predict_scene(
        lambda b: np.broadcast_to((b[:, 0, :1, :1] > 0).astype(np.float32), (len(b), 128, 128)).copy(),
        scene,
        tile=128,
        overlap=64,
    )
    # tile at x=0 predicts 0 (its first column is 0), tile at x=64 predicts 1
    assert out[:, :64].max() == 0.0 and out[:, 128:].min() == 1.0
    mid = out[0, 64:128]
    assert 0.0 < mid.min() < mid.max() < 1.0 and np.all(np.diff(mid) >= 0)


def test_read_inputs_patch_folder_and_scene(tmp_path: Path) -> None:
    from imagery.data import write_image

    rng = np.random.default_rng(1)
    write_image(tmp_path / "in" / "image_7.h5", rng.random((14, 128, 128)).astype(np.float32))
    np.save(tmp_path / "in" / "scene.npy", rng.random((200, 260, 14)).astype(np.float32))
    items = {it.name: it for it in read_inputs(tmp_path / "in")}
    assert set(items) == {"7", "scene"}
    assert items["7"].image.shape == (14, 128, 128) and not items["7"].is_scene
    assert items["scene"].image.shape == (14, 200, 260) and items["scene"].is_scene


@pytest.mark.parametrize(
    "make,expect",
    [
        (lambda p: p / "missing.h5", "not found"),
        (lambda p: (np.save(p / "bad.npy", np.zeros((128, 128, 3))), p / "bad.npy")[1], "expected (H, W, 14)"),
        (lambda p: ((p / "x.txt").write_text("hi"), p / "x.txt")[1], "expected an .h5"),
        (lambda p: ((p / "e.h5").write_bytes(b"junk"), p / "e.h5")[1], "not an HDF5"),
    ],
)
def test_read_inputs_bad_input_one_line(tmp_path: Path, make, expect: str) -> None:
    path = make(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        read_inputs(path)
    assert expect in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------ CLI with a tiny saved segmenter
def _tiny_segmenter_dir(folder: Path, threshold: float = 0.5) -> Path:
    from imagery.inference import SegmenterMeta, save_segmenter_files
    from imagery.models import create_model

    torch.manual_seed(0)
    kw = {"in_channels": 23, "num_classes": 2, "head": "multires", "base_width": 4}
    model = create_model("rau_net1", **kw)
    meta = SegmenterMeta(model_name="rau_net1", model_kwargs=kw, channel_set=23, threshold=threshold)
    save_segmenter_files(model, meta, folder)
    return folder


def test_predict_cli_on_real_unlabelled_patches(tmp_path: Path, tracking_uri: str) -> None:
    from pipelines.predict_imagery import main

    src = shared_dataset("landslide4sense_unlabeled_suraj") / "img"
    model_dir = _tiny_segmenter_dir(tmp_path / "model", threshold=0.3)
    out = tmp_path / "out"
    assert main(["--model", str(model_dir), "--input", str(src), "--out", str(out), "--device", "cpu"]) == 0
    ids = sorted(int(p.stem.split("_")[1]) for p in src.glob("image_*.h5"))
    assert len(ids) == 14
    for i in ids:
        with h5py.File(out / f"mask_{i}.h5", "r") as fh:
            mask = fh["mask"][()]
        assert mask.shape == (128, 128) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        prob = np.load(out / f"prob_{i}.npy")
        assert prob.shape == (128, 128) and np.isfinite(prob).all() and 0 <= prob.min() <= prob.max() <= 1
        np.testing.assert_array_equal(mask, (prob > 0.3).astype(np.uint8))
        assert (out / f"overlay_{i}.png").stat().st_size > 0
    assert not list(out.glob(".*tmp*"))


def test_predict_cli_scene(tmp_path: Path, tracking_uri: str) -> None:
    from imagery.data.synthetic import synth_patch
    from pipelines.predict_imagery import main

    rng = np.random.default_rng(3)
    tiles = [synth_patch(rng, has_landslide=True, size=128)[0] for _ in range(4)]
    scene = np.concatenate([np.concatenate(tiles[:2], axis=2), np.concatenate(tiles[2:], axis=2)], axis=1)[
        :, :200, :230
    ]
    np.save(tmp_path / "scene.npy", np.moveaxis(scene, 0, -1))
    out = tmp_path / "out"
    code = main(
        [
            "--model",
            str(_tiny_segmenter_dir(tmp_path / "m")),
            "--input",
            str(tmp_path / "scene.npy"),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-overlays",
        ]
    )
    assert code == 0
    prob = np.load(out / "prob_scene.npy")
    assert prob.shape == (200, 230) and np.isfinite(prob).all()
    with h5py.File(out / "mask_scene.h5", "r") as fh:
        assert fh["mask"].shape == (200, 230)


def test_predict_cli_bad_input_exits_2_without_outputs(tmp_path: Path, tracking_uri: str, capsys) -> None:
    from common.cli import run_main
    from pipelines.predict_imagery import main

    model_dir = _tiny_segmenter_dir(tmp_path / "m")
    np.save(tmp_path / "bad.npy", np.zeros((64, 64, 5), np.float32))
    out = tmp_path / "out"
    code = run_main(main, ["--model", str(model_dir), "--input", str(tmp_path / "bad.npy"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "bad.npy" in err and "\n" not in err
    assert not out.exists()
    code = run_main(main, ["--model", str(tmp_path / "nope"), "--input", str(tmp_path / "bad.npy"), "--out", str(out)])
    assert code == 2
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "ok.npy", np.ones((128, 128, 14), np.float32))
    code = run_main(main, ["--model", str(tmp_path / "nope"), "--input", str(tmp_path / "in"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "nope" in err and not out.exists()
