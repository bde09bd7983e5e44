"""Held-out comparison of the tabular, imagery and fused probabilities, with paired bootstrap intervals.

:func:`bootstrap_table`: for each model, ROC-AUC, PR-AUC and F1 (at the model's own threshold) on the
held-out regions, with a 95% percentile interval from ``scipy.stats.bootstrap`` (paired: every
replicate resamples the same regions for every model). Rows ``fused - <model>`` give the point
difference and the interval of the paired difference, so "fused is better" is read off an interval
that excludes 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from common.metrics import binary_metrics

EVAL_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "f1")


def _scores(y: np.ndarray, probs: list[np.ndarray], thresholds: list[float]) -> np.ndarray:
    """Flat vector: EVAL_METRICS of each model, then (fused - other) for each other model (fused is last)."""
    per = [binary_metrics(y, p, t, names=EVAL_METRICS) for p, t in zip(probs, thresholds, strict=True)]
    rows = [[m[k] for k in EVAL_METRICS] for m in per]
    deltas = [[per[-1][k] - m[k] for k in EVAL_METRICS] for m in per[:-1]]
    return np.asarray(rows + deltas, dtype=np.float64).ravel()


def bootstrap_table(
    y: np.ndarray, probs: dict[str, np.ndarray], thresholds: dict[str, float], n_boot: int, seed: int
) -> pd.DataFrame:
    """Point estimate and 95% paired-bootstrap interval of ROC-AUC, PR-AUC and F1 per model.

    ``probs`` maps model name to P(landslide) ``(n,)``; the key ``"fused"`` (when present) gets the
    paired-difference rows ``fused - <model>``. Columns: ``model, threshold`` and ``<metric>``,
    ``<metric>_lo``, ``<metric>_hi`` for each of :data:`EVAL_METRICS`.
    """
    names = [m for m in probs if m != "fused"] + (["fused"] if "fused" in probs else [])
    y = np.asarray(y).astype(int)
    arrays = [np.asarray(probs[m], dtype=np.float64) for m in names]
    ts = [float(thresholds[m]) for m in names]
    point = _scores(y, arrays, ts)
    res = bootstrap(
        (y, *arrays),
        lambda yy, *pp: _scores(yy, list(pp), ts),
        paired=True,
        vectorized=False,
        n_resamples=n_boot,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    lo = np.asarray(res.confidence_interval.low)
    hi = np.asarray(res.confidence_interval.high)
    labels = names + ([f"fused - {m}" for m in names[:-1]] if "fused" in probs else [])
    k = len(EVAL_METRICS)
    rows = []
    for i, label in enumerate(labels[: len(point) // k]):
        row: dict[str, object] = {"model": label, "threshold": thresholds.get(label, np.nan)}
        for j, metric in enumerate(EVAL_METRICS):
            row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = point[i * k + j], lo[i * k + j], hi[i * k + j]
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame, n_test: int, n_pos: int) -> str:
    """The printed results table (differences with a sign)."""
    lines = [
        f"held-out test regions: {n_test} ({n_pos} with a landslide); 95% paired bootstrap intervals",
        f"{'model':<17}{'ROC-AUC':>24}{'PR-AUC':>24}{'F1':>24}",
    ]
    for r in table.itertuples(index=False):
        fmt = "+.3f" if str(r.model).startswith("fused -") else ".3f"
        cells = [
            f"{getattr(r, k):{fmt}} [{getattr(r, k + '_lo'):{fmt}}, {getattr(r, k + '_hi'):{fmt}}]"
            for k in EVAL_METRICS
        ]
        lines.append(f"{r.model:<17}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)
