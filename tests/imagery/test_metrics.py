"""Metrics: hand-counted pixel scores, micro accumulation across batches, empty-denominator rules,
torch/NumPy parity and patch-level detection scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imagery.inference.metrics import SegmentationCounts, patch_detection_metrics


def test_scores_by_hand() -> None:
    pred = np.array([[[1, 1, 0], [0, 0, 0]]])
    target = np.array([[[1, 0, 0], [1, 1, 0]]])
    # TP = 1, FP = 1, FN = 2, TN = 2
    m = SegmentationCounts()
    m.update(pred, target)
    s = m.compute()
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (1, 1, 2, 2)
    assert s["ls_precision"] == pytest.approx(0.5)
    assert s["ls_recall"] == pytest.approx(1 / 3)
    assert s["ls_f1"] == pytest.approx(2 / 5)
    assert s["ls_iou"] == pytest.approx(1 / 4)
    assert s["bg_f1"] == pytest.approx(4 / 7)
    assert s["bg_iou"] == pytest.approx(2 / 5)
    assert s["f1_2class_mean"] == pytest.approx((2 / 5 + 4 / 7) / 2)
    assert s["miou_2class"] == pytest.approx((1 / 4 + 2 / 5) / 2)
    assert s["pixel_accuracy"] == pytest.approx(3 / 6)


def test_micro_accumulation_differs_from_mean_of_batches() -> None:
    m = SegmentationCounts()
    m.update(torch.tensor([[[1, 0]]]), torch.tensor([[[1, 0]]]))  # perfect: F1 1
    m.update(torch.tensor([[[0, 0, 0, 0]]]), torch.tensor([[[1, 1, 1, 0]]]))  # all missed
    s = m.compute()
    assert s["ls_f1"] == pytest.approx(2 / (2 + 3))  # pooled counts, not (1 + 0) / 2
    m.reset()
    assert m.compute()["ls_f1"] == 1.0 and m.tp == 0


def test_empty_denominators() -> None:
    m = SegmentationCounts()
    m.update(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool))
    s = m.compute()
    assert s["ls_f1"] == s["ls_iou"] == s["ls_precision"] == s["ls_recall"] == 1.0
    m.update(np.zeros((1, 2, 2)), np.ones((1, 2, 2)))  # misses everything, predicts nothing
    s = m.compute()
    assert s["ls_precision"] == 1.0 and s["ls_recall"] == 0.0 and s["ls_f1"] == 0.0


def test_torch_and_numpy_agree_and_shape_check() -> None:
    rng = np.random.default_rng(0)
    pred, target = rng.random((3, 16, 16)) > 0.6, rng.random((3, 16, 16)) > 0.7
    a, b = SegmentationCounts(), SegmentationCounts()
    a.update(pred, target.astype(np.uint8))
    b.update(torch.from_numpy(pred), torch.from_numpy(target).long())
    assert a.compute() == b.compute()
    with pytest.raises(ValueError, match="prediction shape"):
        a.update(pred[:, :8], target)


def test_patch_detection_metrics() -> None:
    prob = np.array([0.9, 0.2, 0.6, 0.4, 0.1])
    label = np.array([1, 0, 0, 1, 0])
    s = patch_detection_metrics(prob, label, threshold=0.5)
    # predicted positive: 0.9 (TP), 0.6 (FP); 0.4 is a FN
    assert s["patch_precision"] == pytest.approx(0.5)
    assert s["patch_recall"] == pytest.approx(0.5)
    assert s["patch_f1"] == pytest.approx(0.5)
    # AUC: pairs (pos, neg): 0.9 beats all 3, 0.4 beats 0.2 and 0.1 -> 5 / 6
    assert s["patch_auc"] == pytest.approx(5 / 6)
    one_class = patch_detection_metrics(np.array([0.2, 0.7]), np.array([0, 0]))
    assert math.isnan(one_class["patch_auc"]) and one_class["patch_f1"] == 0.0
    with pytest.raises(ValueError, match="expected equal"):
        patch_detection_metrics(prob, label[:3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        patch_detection_metrics(prob * 2, label)
