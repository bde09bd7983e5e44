"""Stratified or grouped k-fold cross-validation with out-of-fold probabilities.

The decision threshold is the one maximising F1 on the pooled out-of-fold probabilities; the
per-fold F1/precision/recall are reported at that same threshold (so they are slightly optimistic:
the threshold has seen every fold; ROC-AUC, PR-AUC and Brier do not depend on it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from common.cli import UserError
from common.metrics import METRIC_NAMES, best_f1_threshold, binary_metrics
from tabular.config import LGBMParams
from tabular.model import LandslideClassifier


@dataclass(frozen=True)
class CVResult:
    """Out-of-fold results: ``oof`` P(landslide) per row, ``fold`` index (0-based) per row,
    ``fold_metrics`` (one row per fold: fold, n_train, n_valid, best_iteration, metrics), the
    chosen ``threshold`` and the ``summary`` {metric_mean, metric_std}."""

    oof: np.ndarray
    fold: np.ndarray
    fold_metrics: pd.DataFrame
    threshold: float
    best_iterations: list[int]
    summary: dict[str, float] = field(default_factory=dict)
    unseen_levels: int = 0

    @property
    def mean_best_iteration(self) -> int:
        return max(1, int(round(float(np.mean(self.best_iterations)))))


def make_folds(
    y: np.ndarray, n_folds: int, *, groups: np.ndarray | None = None, seed: int = 42, shuffle: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, valid_idx) pairs: StratifiedKFold, or StratifiedGroupKFold when ``groups`` is given
    (a group never sits on both sides of a split). Raises ValueError when there are too few rows
    of a class or too few groups for ``n_folds``."""
    y = np.asarray(y)
    if n_folds < 2:
        raise UserError(f"--folds must be >= 2, got {n_folds}")
    counts = np.bincount(y.astype(int), minlength=2)
    if counts.min() < n_folds:
        raise UserError(
            f"the smaller class has {int(counts.min())} rows, fewer than the {n_folds} CV folds (expected >= {n_folds})"
        )
    idx = np.zeros(len(y))
    if groups is not None:
        n_groups = len(pd.unique(groups))
        if n_groups < n_folds:
            raise UserError(f"--group column has {n_groups} groups, fewer than the {n_folds} CV folds")
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=shuffle, random_state=seed if shuffle else None)
        splits = splitter.split(idx, y, groups)
    else:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=shuffle, random_state=seed if shuffle else None)
        splits = splitter.split(idx, y)
    return [(np.asarray(tr), np.asarray(va)) for tr, va in splits]


def cross_validate(
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    params: LGBMParams | None = None,
    categorical: Sequence[str] | None = None,
    n_folds: int = 5,
    groups: np.ndarray | None = None,
    seed: int = 42,
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
    progress: Callable[[str], None] | None = print,
    inner_groups: np.ndarray | None = None,
) -> CVResult:
    """Fit one :class:`LandslideClassifier` per fold (early stopping inside its training part) and
    collect out-of-fold P(landslide). ``folds`` overrides the splitter (to compare models on the
    same folds). ``progress`` receives one line per fold (fold i/k, elapsed seconds). ``inner_groups``
    (one id per row, e.g. spatial blocks) makes each fold's early-stopping split hold out whole groups."""
    y = np.asarray(y).astype(np.int64)
    folds = folds if folds is not None else make_folds(y, n_folds, groups=groups, seed=seed)
    oof = np.full(len(y), np.nan)
    fold_of = np.full(len(y), -1, dtype=np.int64)
    best: list[int] = []
    n_unseen = 0
    start = time.perf_counter()
    for i, (tr, va) in enumerate(folds):
        t0 = time.perf_counter()
        clf = LandslideClassifier(params, seed=seed, categorical=categorical)
        clf.fit(X.iloc[tr], y[tr], groups=None if inner_groups is None else inner_groups[tr])
        oof[va] = clf.booster_.predict(
            clf.encode(X.iloc[va], warn=False),
            num_iteration=clf.best_iteration_,
            num_threads=clf.params_.threads_for(len(va)),
        )
        n_unseen += sum(clf.last_unseen_counts_.values())
        fold_of[va] = i
        best.append(clf.best_iteration_)
        if progress is not None:
            now = time.perf_counter()
            progress(
                f"fold {i + 1}/{len(folds)}: {len(va)} rows, {clf.best_iteration_} rounds, "
                f"{now - t0:.1f}s (elapsed {now - start:.1f}s)"
            )
    if np.isnan(oof).any():
        raise ValueError("the folds do not cover every row (expected a partition of the rows)")
    threshold = best_f1_threshold(y, oof)
    rows = []
    for i, (tr, va) in enumerate(folds):
        m = binary_metrics(y[va], oof[va], threshold)
        rows.append({"fold": i, "n_train": len(tr), "n_valid": len(va), "best_iteration": best[i], **m})
    fm = pd.DataFrame(rows)
    summary: dict[str, float] = {}
    for name in METRIC_NAMES:
        summary[f"{name}_mean"] = float(fm[name].mean())
        summary[f"{name}_std"] = float(fm[name].std(ddof=1)) if len(fm) > 1 else 0.0
    return CVResult(oof, fold_of, fm, threshold, best, summary, n_unseen)
