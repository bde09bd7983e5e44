"""Binary classification metrics and the max-F1 decision threshold."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

METRIC_NAMES: tuple[str, ...] = ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier")


def best_f1_threshold(y_true: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold that maximises F1 of ``p >= threshold`` (ties: the lowest such threshold)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        raise ValueError("cannot choose a threshold: y_true has a single class (expected 0 and 1)")
    precision, recall, thresholds = precision_recall_curve(y_true, p)
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(thresholds[int(np.argmax(f1))])


def binary_metrics(y_true: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), F1/precision/recall at ``threshold`` and the Brier score."""
    y_true = np.asarray(y_true).astype(int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    two = len(np.unique(y_true)) == 2
    return {
        "roc_auc": float(roc_auc_score(y_true, p)) if two else float("nan"),
        "pr_auc": float(average_precision_score(y_true, p)) if two else float("nan"),
        "f1": float(f1_score(y_true, pred, zero_division=0)),
        "precision": float(precision_score(y_true, pred, zero_division=0)),
        "recall": float(recall_score(y_true, pred, zero_division=0)),
        "brier": float(brier_score_loss(y_true, p)),
    }
