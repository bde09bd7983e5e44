"""Each loss against a value computed by hand (plain NumPy on a 1x2x2x2 tensor), gradient flow,
wrappers (multi-resolution targets, dual BCE) and name/parameter errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imagery.training.losses import (
    DualLoss,
    MultiResLoss,
    OutLoss,
    boundary_map,
    build_criterion,
    center_map,
    create_loss,
    list_losses,
    resize_target,
)

LOGITS = np.array([[[[2.0, -1.0], [0.5, 0.0]], [[-1.0, 1.5], [0.0, 3.0]]]])  # (1, 2, 2, 2)
TARGET = np.array([[[0, 1], [1, 0]]])  # (1, 2, 2)


def _softmax() -> np.ndarray:
    e = np.exp(LOGITS - LOGITS.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


P = _softmax()  # (1, 2, 2, 2)
Y = np.stack([TARGET == 0, TARGET == 1], axis=1).astype(float)
PT = (P * Y).sum(axis=1)  # prob of the true class, (1, 2, 2)


def _loss(name: str, **params: object) -> float:
    logits = torch.tensor(LOGITS, dtype=torch.float32)
    return float(create_loss(name, **params)(logits, torch.tensor(TARGET)))


def _iou_loss() -> float:
    inter = (P * Y).sum(axis=(0, 2, 3))
    union = (P + Y).sum(axis=(0, 2, 3)) - inter
    return float(np.mean(-np.log((inter + 1e-7) / (union + 1e-7))))


def _focal(gamma: float = 2.0) -> float:
    return float(((1 - PT) ** gamma * -np.log(PT)).sum() / 8)  # mean over B*H*W*2 = 8 elements


def test_ce_by_hand() -> None:
    assert _loss("ce") == pytest.approx(float(np.mean(-np.log(PT))), rel=1e-5)


def test_focal_by_hand_is_half_the_pixel_mean() -> None:
    assert _loss("focal") == pytest.approx(_focal(), rel=1e-5)
    assert _loss("focal", gamma=0.0) == pytest.approx(_loss("ce") / 2, rel=1e-5)


def test_focal_clips_probabilities() -> None:
    logits = torch.tensor([[[[40.0]], [[-40.0]]]])  # p_landslide ~ 1e-35, target landslide
    value = float(create_loss("focal", gamma=0.0)(logits, torch.tensor([[[1]]])))
    assert value == pytest.approx(-np.log(1e-7) / 2, rel=1e-5)


def test_iou_by_hand() -> None:
    assert _loss("iou") == pytest.approx(_iou_loss(), rel=1e-5)
    inter1 = (P[:, 1] * Y[:, 1]).sum()
    union1 = (P[:, 1] + Y[:, 1]).sum() - inter1
    assert _loss("iou", classes="landslide") == pytest.approx(-np.log((inter1 + 1e-7) / (union1 + 1e-7)), rel=1e-5)


def test_dice_and_log_cosh_by_hand() -> None:
    dice = (2 * (P * Y).sum(axis=(0, 2, 3)) + 1) / (Y.sum(axis=(0, 2, 3)) + P.sum(axis=(0, 2, 3)) + 1)
    dice_loss = 1 - dice.mean()
    assert _loss("dice") == pytest.approx(dice_loss, rel=1e-5)
    assert _loss("log_cosh_dice") == pytest.approx(np.log(np.cosh(dice_loss)), rel=1e-5)


def test_tversky_by_hand() -> None:
    p1, y1 = P[:, 1], Y[:, 1]
    tp, fp, fn = (p1 * y1).sum(), (p1 * (1 - y1)).sum(), (y1 * (1 - p1)).sum()
    expected = 1 - (tp + 1e-7) / (tp + 0.3 * fp + 0.7 * fn + 1e-7)
    assert _loss("tversky_landslide") == pytest.approx(expected, rel=1e-5)
    # a = b = 0.5 is the dice loss (Tversky smooth s equals dice smooth 2s)
    dice_like = _loss("tversky_landslide", a=0.5, b=0.5, classes="both", smooth=0.5)
    assert dice_like == pytest.approx(_loss("dice"), rel=1e-5)


def test_lovasz_by_hand() -> None:
    # class 1: errors |y - p| per pixel, sorted decreasingly, times the Jaccard increments.
    expected = []
    for c in (0, 1):
        e = np.abs(Y[0, c] - P[0, c]).ravel()
        y = Y[0, c].ravel()
        order = np.argsort(-e)
        g = y.sum()
        jac = [1 - (g - y[order][: k + 1].sum()) / (g + (1 - y[order][: k + 1]).sum()) for k in range(4)]
        grad = np.diff(np.concatenate([[0.0], jac]))
        expected.append(float((e[order] * grad).sum()))
    assert _loss("lovasz_softmax") == pytest.approx(np.mean(expected), rel=1e-5)


def test_lovasz_equals_jaccard_loss_on_hard_predictions() -> None:
    # with one-hot predictions the Lovasz extension equals 1 - IoU of the hard mask, per class
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    target = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    logits = torch.tensor(np.stack([1 - pred, pred])[None] * 60.0, dtype=torch.float32)
    value = float(create_loss("lovasz_softmax")(logits, torch.tensor(target[None])))
    iou_ls = 2 / 4
    iou_bg = 5 / 7
    assert value == pytest.approx(np.mean([1 - iou_bg, 1 - iou_ls]), rel=1e-5)


def test_boundary_map_and_boundary_loss_by_hand() -> None:
    target = np.zeros((1, 5, 5), dtype=np.int64)
    target[0, 1:4, 1:4] = 1
    b = boundary_map(torch.tensor(target)).numpy()[0]
    expected = np.ones((5, 5))
    expected[2, 2] = 0  # the eroded 3x3 blob keeps its centre only
    np.testing.assert_array_equal(b, expected)
    # on the 2x2 example: morphological gradient of [[0,1],[1,0]] is 1 everywhere -> w = 5 everywhere
    assert _loss("boundary_weighted") == pytest.approx(float(np.mean(-np.log(PT))), rel=1e-5)
    assert _loss("boundary_weighted", gamma=2.0) == pytest.approx(2 * _focal(), rel=1e-5)


def test_center_map_peaks_at_blob_centres() -> None:
    target = np.zeros((1, 7, 9), dtype=np.int64)
    target[0, 1:6, 1:6] = 1  # 5x5 blob: centre distance 3, rim 1
    target[0, 2, 7] = 1  # a one-pixel blob: its own centre
    c = center_map(torch.tensor(target)).numpy()[0]
    assert c[3, 3] == pytest.approx(1.0)
    assert c[1, 1] == pytest.approx(1 / 3, rel=1e-3)
    assert c[2, 2] == pytest.approx(2 / 3, rel=1e-3)
    assert c[2, 7] == pytest.approx(1.0)
    assert c[0, 0] == 0.0 and c[6, 8] == 0.0


def test_center_loss_by_hand() -> None:
    # each landslide pixel of the 2x2 example is its own blob -> weight 1 + 4 = 5; background weight 1
    w = np.where(TARGET == 1, 5.0, 1.0)
    expected = float((w * -np.log(PT)).sum() / w.sum())
    assert _loss("center_weighted") == pytest.approx(expected, rel=1e-5)


def test_combinations_by_hand() -> None:
    ce = float(np.mean(-np.log(PT)))
    w = np.where(TARGET == 1, 5.0, 1.0)
    center = float((w * -np.log(PT)).sum() / w.sum())
    assert _loss("focal_iou") == pytest.approx(0.5 * _focal() + 0.5 * _iou_loss(), rel=1e-5)
    assert _loss("focal_iou", mix=0.8) == pytest.approx(0.8 * _focal() + 0.2 * _iou_loss(), rel=1e-5)
    assert _loss("ce_iou") == pytest.approx(0.5 * ce + 0.5 * _iou_loss(), rel=1e-5)
    assert _loss("focal_iou_center") == pytest.approx(0.5 * _focal() + 0.5 * _iou_loss() + 0.5 * center, rel=1e-5)


@pytest.mark.parametrize("name", list_losses())
def test_gradients_flow(name: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    target = (torch.rand(2, 8, 8) > 0.7).long()
    loss = create_loss(name)(logits, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # one gradient step on the logits lowers the loss
    with torch.no_grad():
        stepped = logits - 0.5 * logits.grad / logits.grad.abs().max()
    assert float(create_loss(name)(stepped, target)) < float(loss.detach())


def test_resize_target_nearest() -> None:
    t = torch.tensor([[[0, 1], [1, 0]]])
    np.testing.assert_array_equal(
        resize_target(t, (4, 4))[0].numpy(), [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    )
    t4 = torch.arange(16).view(1, 4, 4)
    np.testing.assert_array_equal(resize_target(t4, (2, 2))[0].numpy(), [[0, 2], [8, 10]])


def test_multires_and_dual_wrappers() -> None:
    torch.manual_seed(0)
    out = {"out": torch.randn(2, 2, 4, 4), "out_256": torch.randn(2, 2, 8, 8), "out_64": torch.randn(2, 2, 2, 2)}
    y = (torch.rand(2, 4, 4) > 0.5).long()
    base = create_loss("focal_iou")
    expected = (
        0.25 * base(out["out_256"], resize_target(y, (8, 8)))
        + 0.5 * base(out["out"], y)
        + 0.25 * base(out["out_64"], y[:, ::2, ::2])
    )
    torch.testing.assert_close(MultiResLoss(base)(out, y), expected)
    torch.testing.assert_close(build_criterion("focal_iou", "multires")(out, y), expected)
    torch.testing.assert_close(build_criterion("ce", "mono")(out, y), create_loss("ce")(out["out"], y))
    y[0] = 0  # image 0 has no landslide, image 1 does
    dual = {"out": out["out"], "patch_logit": torch.tensor([0.3, -0.7])}
    bce = -(np.log(1 - 1 / (1 + np.exp(-0.3))) + np.log(1 / (1 + np.exp(0.7)))) / 2
    got = DualLoss(OutLoss(create_loss("ce")), bce_weight=2.0)(dual, y)
    assert float(got) == pytest.approx(float(create_loss("ce")(out["out"], y)) + 2 * bce, rel=1e-5)
    assert isinstance(build_criterion("ce", "dual"), DualLoss)


def test_bad_names_and_params() -> None:
    with pytest.raises(
        ValueError, match="loss 'dicey': expected a study name .*tversky.* or a literature name .*_dice"
    ):
        create_loss("dicey")
    with pytest.raises(ValueError, match="loss 'focal': bad parameter"):
        create_loss("focal", gama=2)
    with pytest.raises(ValueError, match="head='x'"):
        build_criterion("ce", "x")
    with pytest.raises(ValueError, match=r"expected \(B, K, H, W\)"):
        create_loss("ce")(torch.randn(1, 2, 4, 4), torch.zeros(1, 3, 3, dtype=torch.long))


# ------------------------------------------------------------------ the seed study's losses, by hand
PC = np.clip(P, 1e-7, 1 - 1e-7)


def test_study_log_cosh_by_hand() -> None:
    # mean over B*H*W*2 of w_c * log(cosh((p - y)^2)), background weight 0.8
    w = np.array([0.8, 1.0])[None, :, None, None]
    expected = float((w * np.log(np.cosh((PC - Y) ** 2))).sum() / 8)
    assert _loss("log_cosh") == pytest.approx(expected, rel=1e-5)
    assert _loss("log_cosh", bg_weight=1.0) == pytest.approx(float(np.log(np.cosh((PC - Y) ** 2)).mean()), rel=1e-5)


def test_study_tversky_by_hand() -> None:
    tp = (P * Y).sum(axis=(0, 2, 3))
    fp = (P * (1 - Y)).sum(axis=(0, 2, 3))
    fn = (Y * (1 - P)).sum(axis=(0, 2, 3))
    expected = float(np.mean(-np.log((tp + 1e-7) / (tp + 0.75 * fp + 0.75 * fn + 1e-7))))
    assert _loss("tversky") == pytest.approx(expected, rel=1e-5)
    assert _loss("tversky") != pytest.approx(_loss("tversky_landslide"), rel=1e-2)


def test_study_lovasz_by_hand() -> None:
    expected = []
    for c in (0, 1):
        e = np.sqrt(np.abs(Y[0, c] - PC[0, c])).ravel()
        y = Y[0, c].ravel()
        order = np.argsort(-e, kind="stable")
        g = y.sum()
        jac = []
        for k in range(4):
            inter = g - y[order][: k + 1].sum()
            union = g + (1 - y[order][: k + 1]).sum()
            jac.append(-np.log((inter + 1e-7) / (union + 1e-7)))
        grad = np.diff(np.concatenate([[0.0], jac]))
        expected.append(float((e[order] * grad).sum()))
    assert _loss("lovasz") == pytest.approx(np.mean(expected), rel=1e-5)


def _brute_edt(mask: np.ndarray) -> np.ndarray:
    """Distance of every nonzero pixel to the nearest zero pixel (0 on zero pixels), by brute force."""
    zeros = np.argwhere(mask == 0)
    out = np.zeros(mask.shape)
    for r, c in np.argwhere(mask != 0):
        out[r, c] = np.sqrt(((zeros - [r, c]) ** 2).sum(axis=1)).min()
    return out


def test_study_boundary_by_hand() -> None:
    target = np.zeros((2, 12, 12), dtype=np.int64)
    target[0, 1:11, 1:11] = 1  # a 10x10 blob: pixels at distance 1..5 from the background
    # image 1 has no landslide: weight 1 everywhere
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 2, 12, 12))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = np.clip(e / e.sum(axis=1, keepdims=True), 1e-7, 1 - 1e-7)
    y = target[0]
    d1, d0 = _brute_edt(y) + 1, _brute_edt(1 - y) + 1
    w = np.ones((2, 12, 12))
    w[0] = np.where(y == 1, np.where(d1 < 4.5, d1.max(), 1.0), 0.8 * d0.max())
    # the blob's centre is 5 px in (weight 1 there: not near the boundary); the image corners are sqrt(2) out
    assert d1.max() == 6.0 and d0.max() == pytest.approx(1 + np.sqrt(2))
    np.testing.assert_allclose(np.unique(w[0]), [1.0, 0.8 * (1 + np.sqrt(2)), 6.0])
    pt = np.where(target == 1, p[:, 1], p[:, 0])
    expected = float((w * -np.log(pt)).sum() / (2 * 12 * 12 * 2))
    got = float(create_loss("boundary")(torch.tensor(logits, dtype=torch.float32), torch.tensor(target)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_study_center_as_trained_is_half_the_cross_entropy() -> None:
    assert _loss("center") == pytest.approx(float(np.mean(-np.log(PC * Y + (1 - Y)).sum(axis=1))) / 2, rel=1e-5)
    assert _loss("center") == pytest.approx(_loss("ce") / 2, rel=1e-5)
    assert _loss("center") != pytest.approx(_loss("center_weighted"), rel=1e-2)


def test_study_losses_skip_ignored_pixels() -> None:
    logits = torch.tensor(LOGITS, dtype=torch.float32)
    target = torch.tensor(TARGET)
    padded_logits = torch.cat([logits, torch.randn(1, 2, 2, 2)], dim=3)  # two extra columns ...
    padded_target = torch.cat([target, torch.full((1, 2, 2), 255)], dim=2)  # ... that are unlabelled
    for name in ("log_cosh", "tversky", "lovasz", "center", "boundary"):
        assert float(create_loss(name)(padded_logits, padded_target)) == pytest.approx(
            float(create_loss(name)(logits, target)), rel=1e-5
        ), name


def test_study_and_literature_names_are_disjoint_and_complete() -> None:
    from imagery.training.losses import LITERATURE_LOSSES, LOSSES, STUDY_LOSSES
    from imagery.training.study_tables import TABLES

    assert set(STUDY_LOSSES) | set(LITERATURE_LOSSES) == set(LOSSES)
    assert not set(STUDY_LOSSES) & set(LITERATURE_LOSSES)
    # the study names are exactly the deck's loss table (LITERATURE_LOSSES is derived, so check against the deck)
    assert STUDY_LOSSES == tuple(r.key for r in next(t for t in TABLES if t.name == "losses").rows)
    for name in ("log_cosh_dice", "tversky_landslide", "lovasz_softmax", "boundary_weighted", "center_weighted"):
        assert name in LITERATURE_LOSSES
