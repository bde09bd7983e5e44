"""Synthetic L4S-like patches and the seed's feature channels (NumPy/OpenCV vs torch)."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from imagery.data import load_patches
from imagery.data.bands import band_index
from imagery.data.synthetic import synth_patch, write_synthetic_l4s
from imagery.transforms.features import CHANNEL_SETS, channel_names, compute_features, n_channels


def _ndvi(img: np.ndarray) -> np.ndarray:
    nir, red = img[band_index("NIR")], img[band_index("red")]
    return (nir - red) / (nir + red)


def test_synth_patch_is_seeded_and_labelled() -> None:
    a, ma = synth_patch(np.random.default_rng(5), has_landslide=True)
    b, mb = synth_patch(np.random.default_rng(5), has_landslide=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert a.shape == (14, 128, 128) and a.dtype == np.float32 and ma.dtype == np.uint8
    assert 0.005 <= ma.mean() <= 0.08
    assert np.isfinite(a).all()
    _, m0 = synth_patch(np.random.default_rng(5), has_landslide=False)
    assert m0.sum() == 0


def test_scars_have_lower_ndvi_and_prefer_steep_slopes() -> None:
    rng = np.random.default_rng(11)
    ins, outs, slope_in, slope_out = [], [], [], []
    for _ in range(12):
        img, m = synth_patch(rng, has_landslide=True, cloud_fraction=0.0)
        nd = _ndvi(img)
        ins.append(nd[m > 0].mean())
        outs.append(nd[m == 0].mean())
        slope_in.append(img[band_index("slope")][m > 0].mean())
        slope_out.append(img[band_index("slope")][m == 0].mean())
    assert all(i < o for i, o in zip(ins, outs, strict=True))
    assert np.mean(slope_in) > np.mean(slope_out)


def test_clouds_and_steepness_controls() -> None:
    clear, _ = synth_patch(np.random.default_rng(3), has_landslide=False, cloud_fraction=0.0)
    cloudy, _ = synth_patch(np.random.default_rng(3), has_landslide=False, cloud_fraction=0.5)
    cirrus = band_index("B10")
    assert cloudy[cirrus].mean() > 2 * clear[cirrus].mean()
    flat, _ = synth_patch(np.random.default_rng(4), has_landslide=False, steepness=0.3)
    steep, _ = synth_patch(np.random.default_rng(4), has_landslide=False, steepness=2.0)
    assert steep[band_index("slope")].mean() > 2 * flat[band_index("slope")].mean()
    with pytest.raises(ValueError, match="cloud_fraction"):
        synth_patch(np.random.default_rng(0), has_landslide=False, cloud_fraction=1.5)


def test_write_synthetic_l4s_fast_and_readable(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    root = write_synthetic_l4s(tmp_path / "syn", n_patches=64, seed=0, positive_fraction=0.6)
    elapsed = time.perf_counter() - t0
    assert elapsed < 15.0, f"64 synthetic patches took {elapsed:.1f}s"
    ps = load_patches(root, require_masks=True)
    assert len(ps) == 64 and list(ps.ids) == list(range(1, 65))
    labels = ps.patch_labels()
    assert labels.sum() == round(0.6 * 64)
    frac = ps.masks.mean()
    assert 0.005 < frac < 0.05  # L4S: ~2% landslide pixels overall
    a32 = load_patches(write_synthetic_l4s(tmp_path / "a", n_patches=4, seed=3))
    a64 = load_patches(write_synthetic_l4s(tmp_path / "b", n_patches=4, seed=3, dtype=np.float64))
    np.testing.assert_array_equal(a32.images, a64.images)
    with h5py.File(tmp_path / "b" / "img" / "image_1.h5") as fh:
        assert fh["img"].dtype == np.float64 and fh["img"].shape == (128, 128, 14)


def test_channel_sets_match_design_note() -> None:
    assert {k: n_channels(k) for k in CHANNEL_SETS} == {9: 9, 14: 14, 17: 17, 21: 21, 22: 22, 23: 23, 25: 25, 26: 26}
    names = channel_names(23)
    assert names[14:] == ("R_mm", "G_mm", "B_mm", "NDVI", "NBR", "VI", "gray", "blur_box", "blur_median")
    assert "slope" not in channel_names(21) and "DEM" not in channel_names(21)
    assert channel_names(26)[23:] == ("canny", "sobel_x", "sobel_y")
    with pytest.raises(ValueError, match="unknown channel set 24"):
        n_channels(24)


def test_deck_channel_sets_9_and_22() -> None:
    """The deck's 9 (3 RGB + 6 normalised RGB) and 22 (17 + edge + 2 blurs + 2 gradients) channel sets."""
    from imagery.data.bands import L4S_BAND_MEANS

    assert channel_names(9) == ("B2", "B3", "B4", "R_mm", "G_mm", "B_mm", "R_sc", "G_sc", "B_sc")
    assert channel_names(22) == (*channel_names(17), "canny", "blur_box", "blur_median", "sobel_x", "sobel_y")
    rng = np.random.default_rng(1)
    x = np.stack([synth_patch(rng, has_landslide=True, size=32)[0] for _ in range(2)])
    f9 = compute_features(x, 9)
    for c, band in enumerate(("B2", "B3", "B4")):
        np.testing.assert_array_equal(f9[:, c], x[:, band_index(band)])
    for c, band in zip((3, 4, 5), ("B4", "B3", "B2"), strict=True):  # min-max R, G, B by hand
        v = x[:, band_index(band)].astype(np.float64)
        lo, hi = v.min(axis=(1, 2), keepdims=True), v.max(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(f9[:, c], (v - lo) / (hi - lo + 1e-8), atol=1e-6)
    for c, band in zip((6, 7, 8), ("B4", "B3", "B2"), strict=True):  # raw DN / 6000, clipped
        raw = x[:, band_index(band)].astype(np.float64) * float(L4S_BAND_MEANS[band_index(band)])
        np.testing.assert_allclose(f9[:, c], np.clip(raw / 6000.0, 0, 1), rtol=1e-5, atol=1e-7)
    assert 0 < f9[:, 6:].mean() < 1  # the synthetic reflectances land inside [0, 1] after the scaling
    # the 22-set's channels are the 26-set's channels of the same names, computed the same way
    f22, f26 = compute_features(x, 22), compute_features(x, 26)
    for c, name in enumerate(channel_names(22)):
        np.testing.assert_array_equal(f22[:, c], f26[:, channel_names(26).index(name)], err_msg=name)
    # through torch (the GPU path) the 9-set agrees with NumPy
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(compute_features(torch.from_numpy(x), 9).numpy(), f9, atol=1e-5)


def test_feature_values_hand_checked() -> None:
    x = np.ones((14, 32, 32), dtype=np.float32)
    x[band_index("B8")] = 3.0
    x[band_index("B4")] = np.linspace(0, 2, 32 * 32, dtype=np.float32).reshape(32, 32)
    f = compute_features(x, 23)
    assert f.shape == (23, 32, 32) and f.dtype == np.float32
    names = channel_names(23)
    red = x[band_index("B4")]
    np.testing.assert_allclose(f[names.index("NDVI")], (3 - red) / (3 + red), rtol=1e-5)
    np.testing.assert_allclose(f[names.index("R_mm")], red / 2.0, atol=1e-6)
    np.testing.assert_allclose(f[names.index("gray")], (1 + 1 + red) / 3, rtol=1e-6)
    np.testing.assert_array_equal(f[:14], x)
    # constant bands and zero denominators: finite, no division by zero
    z = compute_features(np.zeros((2, 14, 16, 16), dtype=np.float32), 26)
    assert np.isfinite(z).all() and z.shape == (2, 26, 16, 16)


@pytest.mark.parametrize("channel_set", [21, 23, 26])
def test_torch_path_agrees_with_opencv(channel_set: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = np.stack([synth_patch(rng, has_landslide=True, size=64)[0] for _ in range(3)])
    ref = compute_features(x, channel_set)
    got = compute_features(torch.from_numpy(x), channel_set)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert tuple(got.shape) == (3, n_channels(channel_set), 64, 64)
    got = got.numpy()
    names = channel_names(channel_set)
    for c, name in enumerate(names):
        if name == "blur_median":
            # the uint8 gray may differ by one level at rare pixels (float32 vs float64 rounding)
            diff = np.abs(got[:, c] - ref[:, c])
            assert diff.max() <= 1 / 255 + 1e-6 and (diff > 1e-6).mean() < 1e-3, name
        else:
            np.testing.assert_allclose(got[:, c], ref[:, c], atol=2e-4, err_msg=name)
    single = compute_features(torch.from_numpy(x[0]), channel_set)
    assert tuple(single.shape) == (n_channels(channel_set), 64, 64)


def test_features_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="13 channels, expected 14"):
        compute_features(np.zeros((1, 13, 8, 8)))
    with pytest.raises(ValueError, match=r"must be \(B, 14, H, W\)"):
        compute_features(np.zeros((8, 8)))  # 2-D


def test_cpu_preprocessing_split_over_threads_equals_one_thread() -> None:
    """A CPU batch is cut into parts preprocessed side by side: bit for bit what one thread gives, NaN and
    outliers included (cleaning and every feature work patch by patch)."""
    import torch

    from imagery.transforms.preprocess import Preprocessor

    rng = np.random.default_rng(3)
    x = np.stack([synth_patch(rng, has_landslide=i % 2 == 0)[0] for i in range(7)])
    x[1, 3, 5:9, 5:9] = np.nan
    x[4, 2, 0, 0] = 1e6
    pre = Preprocessor(23)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pre(x).numpy()
        torch.set_num_threads(3)
        split = pre(x).numpy()
    finally:
        torch.set_num_threads(threads)
    assert one.shape == (7, 23, 128, 128) and np.isfinite(one).all()
    np.testing.assert_array_equal(split, one)
    np.testing.assert_array_equal(pre(x[2]).numpy(), one[2])  # one (C, H, W) patch


def _features_in_child(queue) -> None:  # a forked process's preprocessing, after the parent used its pool
    import torch

    from imagery.transforms.preprocess import Preprocessor

    torch.set_num_threads(2)
    x = np.stack([synth_patch(np.random.default_rng(i), has_landslide=True)[0] for i in range(4)])
    queue.put(Preprocessor(23)(x).numpy().sum())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork is Unix's")
def test_cpu_preprocessing_works_in_a_forked_child_after_the_parent_used_its_threads() -> None:
    """A child forked after the parent split a batch over its threads (a DataLoader or Dask worker) gets a pool
    of its own: the parent's threads do not exist there, and a stale pool would hang."""
    import multiprocessing

    import torch

    from imagery.transforms.preprocess import Preprocessor

    x = np.stack([synth_patch(np.random.default_rng(i), has_landslide=True)[0] for i in range(4)])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = Preprocessor(23)(x).numpy().sum()  # the parent's pool is now running
    finally:
        torch.set_num_threads(threads)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_features_in_child, args=(queue,))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
    assert queue.get(timeout=5) == want
