"""Patch-derived tabular features never read the mask."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from fusion.patch_features import LEAKING_FEATURES, PATCH_FEATURES, patch_region_table, patch_tabular_features
from imagery.data.synthetic import synth_patch


def _patches(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = [synth_patch(rng, has_landslide=i % 2 == 0, size=32, cloud_fraction=0.0) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_feature_function_cannot_take_a_mask() -> None:
    params = list(inspect.signature(patch_tabular_features).parameters)
    assert params == ["images"]
    assert not set(PATCH_FEATURES) & set(LEAKING_FEATURES)


def test_features_do_not_depend_on_masks() -> None:
    images, masks = _patches()
    ids = np.arange(len(images))
    with_masks = patch_region_table(images, ids, masks)
    rng = np.random.default_rng(1)
    shuffled = patch_region_table(images, ids, rng.permutation(masks))
    without = patch_region_table(images, ids, None)
    cols = list(PATCH_FEATURES)
    np.testing.assert_array_equal(with_masks[cols].to_numpy(), shuffled[cols].to_numpy())
    np.testing.assert_array_equal(with_masks[cols].to_numpy(), without[cols].to_numpy())
    assert "landslide" not in without.columns
    assert with_masks["landslide"].tolist() == [1, 0, 1, 0, 1, 0]


def test_known_values() -> None:
    img = np.ones((1, 14, 8, 8), dtype=np.float32)
    img[0, 7] = 3.0  # B8
    img[0, 3] = 1.0  # B4 -> NDVI = (3-1)/(3+1) = 0.5
    img[0, 12] = np.arange(64, dtype=np.float32).reshape(8, 8)  # slope
    img[0, 13] = 0.0
    img[0, 13, :, 4:] = 10.0  # DEM step of 10
    f = patch_tabular_features(img)
    assert f.loc[0, "ndvi_mean"] == pytest.approx(0.5)
    assert f.loc[0, "bare_frac"] == 0.0
    assert f.loc[0, "slope_max"] == 63.0
    assert f.loc[0, "slope_mean"] == pytest.approx(31.5)
    assert f.loc[0, "relief"] == pytest.approx(10.0)
    assert f.loc[0, "dem_grad_mean"] > 0


def test_nonfinite_pixels_are_ignored_and_shape_checked() -> None:
    images, _ = _patches(2)
    images[0, 12, 0, 0] = np.nan
    images[0, 12, 0, 1] = np.inf
    f = patch_tabular_features(images)
    assert np.isfinite(f.to_numpy()).all()
    with pytest.raises(ValueError, match="14"):
        patch_tabular_features(images[:, :13])
