"""Imagery region features from probability maps."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.region_features import IMAGERY_FEATURES, imagery_region_features


def test_features_of_known_maps() -> None:
    prob = np.zeros((3, 32, 32), dtype=np.float32)
    prob[0, 2:6, 2:6] = 0.9  # one 16-px blob
    prob[0, 20:22, 20:30] = 0.7  # one 20-px blob
    prob[1, 10, 10] = 0.4  # below the threshold
    prob[2] = 0.6  # everything above
    f = imagery_region_features(prob, threshold=0.5, pixel_size_m=10.0)
    assert list(f.columns) == list(IMAGERY_FEATURES)
    assert f.loc[0, "img_n_components"] == 2
    assert f.loc[0, "img_largest_cc_px"] == 20
    assert f.loc[0, "img_largest_cc_m2"] == pytest.approx(2000.0)
    assert f.loc[0, "img_area_frac"] == pytest.approx(36 / 1024)
    assert f.loc[0, "img_max_prob"] == pytest.approx(0.9)
    assert f.loc[0, "img_patch_prob"] == pytest.approx(0.9)  # no patch head: max probability
    assert f.loc[1, "img_n_components"] == 0 and f.loc[1, "img_area_frac"] == 0
    assert f.loc[2, "img_n_components"] == 1 and f.loc[2, "img_largest_cc_px"] == 1024
    assert f.loc[2, "img_mean_prob"] == pytest.approx(0.6)


def test_diagonal_pixels_are_one_component_and_patch_prob_is_used() -> None:
    prob = np.zeros((1, 8, 8), dtype=np.float32)
    prob[0, 1, 1] = prob[0, 2, 2] = prob[0, 3, 3] = 1.0
    f = imagery_region_features(prob, 0.5, patch_prob=np.array([0.3]))
    assert f.loc[0, "img_n_components"] == 1  # 8-connectivity
    assert f.loc[0, "img_patch_prob"] == pytest.approx(0.3)


def test_given_masks_override_threshold() -> None:
    prob = np.full((1, 4, 4), 0.9, dtype=np.float32)
    masks = np.zeros((1, 4, 4), dtype=np.uint8)
    f = imagery_region_features(prob, 0.5, masks=masks)
    assert f.loc[0, "img_area_frac"] == 0.0


@pytest.mark.parametrize("bad", [np.full((1, 4, 4), 1.5), np.full((4, 4), 0.5), np.full((1, 4, 4), np.nan)])
def test_bad_maps_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        imagery_region_features(bad, 0.5)
