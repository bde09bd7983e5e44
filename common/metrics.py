"""Binary classification metrics and the max-F1 decision threshold: the one home of both.

Used by the tabular cross-validation, the stacking fuser, the imagery patch-level scores and the
held-out evaluation of the main job. A sample is predicted positive when ``p >= threshold``.
"""

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
    """The probability threshold that maximises F1 of ``p >= threshold`` (ties: the lowest such threshold).

    Exact: every distinct probability is a candidate (``sklearn.metrics.precision_recall_curve``).
    Raises ``ValueError`` when ``y_true`` holds a single class.
    """
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        raise ValueError("cannot choose a threshold: y_true has a single class (expected 0 and 1)")
    precision, recall, thresholds = precision_recall_curve(y_true, p)
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(thresholds[int(np.argmax(f1))])


def binary_metrics(
    y_true: np.ndarray, p: np.ndarray, threshold: float, *, prefix: str = "", names: tuple[str, ...] = METRIC_NAMES
) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), F1/precision/recall at ``threshold`` and the Brier score.

    ``y_true`` 0/1 ``(n,)``, ``p`` probabilities ``(n,)``. ROC-AUC and PR-AUC are NaN when only one
    class is present. Keys are ``names`` (a subset of :data:`METRIC_NAMES`, all by default; only
    those are computed), each prefixed with ``prefix``.
    """
    y_true = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if p.shape != y_true.shape:
        raise ValueError(f"{p.size} probabilities for {y_true.size} labels; expected equal lengths")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError("expected finite probabilities in [0, 1]")
    unknown = set(names) - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; expected some of {', '.join(METRIC_NAMES)}")
    pred = (p >= threshold).astype(int)
    two = len(np.unique(y_true)) == 2
    compute = {
        "roc_auc": lambda: float(roc_auc_score(y_true, p)) if two else float("nan"),
        "pr_auc": lambda: float(average_precision_score(y_true, p)) if two else float("nan"),
        "f1": lambda: float(f1_score(y_true, pred, zero_division=0)),
        "precision": lambda: float(precision_score(y_true, pred, zero_division=0)),
        "recall": lambda: float(recall_score(y_true, pred, zero_division=0)),
        "brier": lambda: float(brier_score_loss(y_true, p)) if y_true.size else float("nan"),
    }
    return {f"{prefix}{k}": compute[k]() for k in names}
