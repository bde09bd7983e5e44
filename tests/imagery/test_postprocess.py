"""Post-processing: TTA maps rotated back and averaged, multi-resolution voting, thresholding,
morphology, and the vectorised threshold sweep against a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from imagery.inference.metrics import SegmentationCounts
from imagery.inference.postprocess import ThresholdSweep, apply_threshold, morphology, predict_probs, sweep_thresholds
from imagery.models import create_model


class RampModel(nn.Module):
    """Landslide logit = channel 0 + a ramp over rows (not rotation invariant); background logit 0."""

    def __init__(self, multires: bool = False) -> None:
        super().__init__()
        self.multires = multires

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = x.shape[-2]
        ramp = torch.linspace(-2, 2, h)[None, :, None]
        ls = x[:, 0] + ramp
        out = {"out": torch.stack([torch.zeros_like(ls), ls], dim=1)}
        if self.multires:
            b = x.shape[0]
            out["out_256"] = torch.stack([torch.zeros(b, 2 * h, 2 * h), torch.full((b, 2 * h, 2 * h), 2.0)], 1)
            out["out_64"] = torch.stack([torch.zeros(b, h // 2, h // 2), torch.full((b, h // 2, h // 2), -1.0)], 1)
        return out


def _sig(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_no_tta_is_the_softmax_of_out() -> None:
    x = torch.randn(2, 3, 8, 8)
    res = predict_probs(RampModel(), x)
    ramp = np.linspace(-2, 2, 8)[None, :, None]
    np.testing.assert_allclose(res["prob"].numpy(), _sig(x[:, 0].numpy() + ramp), rtol=1e-5)
    assert res["patch_prob"].shape == (2,)


@pytest.mark.parametrize("tta", ["rot4", "rot4flip"])
def test_tta_rotates_back_and_averages(tta: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 6)
    res = predict_probs(RampModel(), x, tta=tta)["prob"].numpy()[0]
    ramp = np.linspace(-2, 2, 6)[:, None]
    img = x[0, 0].numpy()
    maps = []
    for k in range(4):
        for flip in [False, True] if tta == "rot4flip" else [False]:
            view = np.rot90(img, k)
            view = view[:, ::-1] if flip else view
            p = _sig(view + ramp)
            p = p[:, ::-1] if flip else p
            maps.append(np.rot90(p, -k))
    np.testing.assert_allclose(res, np.mean(maps, axis=0), rtol=1e-5)
    # the ramp averages out over 4 rotations: the result differs from the single view
    assert not np.allclose(res, predict_probs(RampModel(), x)["prob"].numpy()[0], atol=1e-3)


def test_tta_on_a_real_model_keeps_shape_and_range() -> None:
    torch.manual_seed(0)
    model = create_model("small_rau_net1", in_channels=4, base_width=4, head="dual").eval()
    res = predict_probs(model, torch.randn(2, 4, 16, 16), tta="rot4flip")
    assert res["prob"].shape == (2, 16, 16) and res["patch_prob"].shape == (2,)
    assert float(res["prob"].min()) >= 0 and float(res["prob"].max()) <= 1
    with pytest.raises(ValueError, match="tta='rot8'"):
        predict_probs(model, torch.randn(1, 4, 16, 16), tta="rot8")
    with pytest.raises(ValueError, match="square"):
        predict_probs(model, torch.randn(1, 4, 16, 8), tta="rot4")
    with pytest.raises(ValueError, match="head='multires'"):
        predict_probs(model, torch.randn(1, 4, 16, 16), vote=True)


def test_vote_averages_the_three_resolutions() -> None:
    x = torch.zeros(1, 1, 4, 4)
    res = predict_probs(RampModel(multires=True), x, vote=True)["prob"].numpy()[0]
    ramp = np.linspace(-2, 2, 4)[:, None] * np.ones((1, 4))
    expected = (_sig(ramp) + _sig(2.0) + _sig(-1.0)) / 3  # constant maps stay constant when resized
    np.testing.assert_allclose(res, expected, rtol=1e-5)


def test_apply_threshold_is_strict() -> None:
    prob = np.array([[0.5, 0.95, 0.951]])
    np.testing.assert_array_equal(apply_threshold(prob, 0.95), [[0, 0, 1]])
    t = apply_threshold(torch.tensor(prob), 0.5)
    assert t.dtype == torch.uint8 and t.tolist() == [[0, 1, 1]]
    with pytest.raises(ValueError, match="threshold 1.5"):
        apply_threshold(prob, 1.5)


def test_morphology_open_and_close() -> None:
    mask = np.zeros((12, 12), np.uint8)
    mask[1, 1] = 1  # isolated noise pixel
    mask[4:10, 4:10] = 1  # a solid 6x6 blob
    opened = morphology(mask, "open", kernel=4)
    assert opened[1, 1] == 0  # noise removed
    np.testing.assert_array_equal(opened[4:10, 4:10], 1)  # the blob survives whole
    assert opened.sum() == 36
    holed = mask.copy()
    holed[6, 6] = 0
    closed = morphology(holed, "close", kernel=4)
    assert closed[6, 6] == 1 and closed[1, 1] == 1 and closed.sum() == 37
    batch = torch.from_numpy(np.stack([mask, mask]))
    out = morphology(batch, "open", kernel=4)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 12, 12)
    np.testing.assert_array_equal(out[1].numpy(), opened)
    assert morphology(mask, None) is mask
    with pytest.raises(ValueError, match="op='erode'"):
        morphology(mask, "erode")


def test_sweep_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    masks = (rng.random((4, 16, 16)) > 0.8).astype(np.uint8)
    probs = np.clip(0.6 * masks + 0.5 * rng.random((4, 16, 16)), 0, 1)
    probs[0, 0, :3] = [0.5, 0.3, 0.99]  # values exactly on grid points
    best_t, table = sweep_thresholds(probs, masks)
    assert len(table) == 70 and table["threshold"].iloc[0] == 0.30 and table["threshold"].iloc[-1] == 0.99
    f1s = []
    for t in table["threshold"]:
        m = SegmentationCounts()
        m.update(probs > t, masks)
        f1s.append(m.compute()["ls_f1"])
    np.testing.assert_allclose(table["ls_f1"].to_numpy(), f1s, rtol=1e-12)
    assert best_t == float(table["threshold"].iloc[int(np.argmax(f1s))])
    assert 0.45 <= best_t <= 0.65  # positives sit at 0.6..1.0, negatives at 0..0.5


def test_streaming_sweep_equals_one_shot_and_validates() -> None:
    rng = np.random.default_rng(1)
    probs, masks = rng.random((6, 8, 8)), rng.random((6, 8, 8)) > 0.5
    s = ThresholdSweep([0.2, 0.5, 0.8])
    for i in range(0, 6, 2):
        s.update(torch.from_numpy(probs[i : i + 2]), torch.from_numpy(masks[i : i + 2]))
    t1, tab1 = s.best()
    t2, tab2 = sweep_thresholds(probs, masks, [0.2, 0.5, 0.8])
    assert t1 == t2 and tab1.equals(tab2)
    with pytest.raises(ValueError, match="strictly increasing"):
        ThresholdSweep([0.5, 0.4])
    with pytest.raises(ValueError, match="shape"):
        sweep_thresholds(probs[:2], masks)


@pytest.mark.parametrize("kernel", [3, 4])
def test_morphology_is_a_true_opening_and_closing(kernel: int) -> None:
    rng = np.random.default_rng(kernel)
    mask = (rng.random((3, 20, 20)) > 0.5).astype(np.uint8)
    opened, closed = morphology(mask, "open", kernel), morphology(mask, "close", kernel)
    assert np.all(opened <= mask) and np.all(closed >= mask)  # anti-extensive / extensive
    np.testing.assert_array_equal(morphology(opened, "open", kernel), opened)  # idempotent
    np.testing.assert_array_equal(morphology(closed, "close", kernel), closed)


def test_predict_probs_computes_the_multires_branches_only_for_vote() -> None:
    torch.manual_seed(0)
    model = create_model("small_rau_net1", in_channels=4, base_width=4, head="multires").eval()
    calls: list[int] = []
    model.head.up.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 4, 16, 16)
    plain = predict_probs(model, x)["prob"]
    assert calls == []  # the 256 px branch was not run: only the 128-px map is read
    with torch.no_grad():
        expected = torch.softmax(model(x)["out"], dim=1)[:, 1]
    torch.testing.assert_close(plain, expected)
    calls.clear()
    voted = predict_probs(model, x, vote=True)["prob"]
    assert calls == [1] and not torch.allclose(voted, plain)
