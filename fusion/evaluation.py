"""Held-out comparison of the tabular, imagery and fused probabilities, with paired bootstrap intervals.

:func:`bootstrap_table`: for each model, ROC-AUC, PR-AUC and F1 (at the model's own threshold) on the
held-out regions, with a 95% percentile interval from ``scipy.stats.bootstrap`` (paired: every
replicate resamples the same regions for every model). Rows ``fused - <model>`` give the point
difference and the interval of the paired difference, so "fused is better" is read off an interval
that excludes 0.

:func:`evaluate_held_out`: the main job's held-out evaluation: a scores table (``fusion.scoring`` columns)
joined to the truth by ``region_id``, the table above at each model's decision threshold, the share of regions
where both models agree, and the metrics logged (:meth:`HeldOutEvaluation.metrics`). :func:`fused_roc_auc`: the
ROC-AUC of ``p_fused`` over the regions that have one (the assess path's check against the truth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import bootstrap
from sklearn.metrics import roc_auc_score

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


@dataclass(frozen=True)
class HeldOutEvaluation:
    """The held-out comparison: ``table`` (:func:`bootstrap_table`), ``n`` regions (``n_pos`` with a landslide)
    and ``agreement`` (share of regions where both models take the same side of their thresholds)."""

    table: pd.DataFrame
    n: int
    n_pos: int
    agreement: float

    def metrics(self) -> dict[str, float]:
        """``test_<model>_<metric>`` (with ``_lo``/``_hi``; ``fused - x`` as ``delta_fused_minus_x``) and
        ``agreement_rate``, the finite ones, as logged to MLflow."""
        out: dict[str, float] = {}
        for r in self.table.itertuples(index=False):
            key = str(r.model).replace("fused - ", "delta_fused_minus_")
            for k in EVAL_METRICS:
                for suffix in ("", "_lo", "_hi"):
                    v = getattr(r, k + suffix)
                    if np.isfinite(v):
                        out[f"test_{key}_{k}{suffix}"] = float(v)
        out["agreement_rate"] = float(self.agreement)
        return out

    def format(self) -> str:
        """The printed results table."""
        return format_table(self.table, self.n, self.n_pos)


def evaluate_held_out(
    truth: pd.DataFrame, scores: pd.DataFrame, thresholds: dict[str, float], n_boot: int, seed: int
) -> HeldOutEvaluation:
    """Compare ``p_tabular``, ``p_imagery`` and ``p_fused`` of ``scores`` with ``truth`` (``region_id``,
    ``landslide``) on every region of ``truth`` (joined one to one by ``region_id``); ``thresholds``: each
    model's decision threshold (``tabular``, ``imagery``, ``fused``)."""
    merged = truth[["region_id", "landslide"]].merge(scores, on="region_id", how="left", validate="one_to_one")
    y = merged["landslide"].to_numpy()
    probs = {name: merged[f"p_{name}"].to_numpy() for name in ("tabular", "imagery", "fused")}
    table = bootstrap_table(y, probs, thresholds, n_boot, seed)
    agree = float(merged["agree"].astype(str).str.lower().eq("true").mean())
    return HeldOutEvaluation(table, len(y), int(y.sum()), agree)


def fused_roc_auc(truth: pd.DataFrame, scores: pd.DataFrame) -> float:
    """ROC-AUC of ``p_fused`` against ``truth`` (``region_id``, ``landslide``) over the regions with a fused
    probability (ids compared as text); NaN unless both classes are among them."""
    t = truth[["region_id", "landslide"]].assign(region_id=lambda d: d["region_id"].astype(str))
    got = scores.assign(region_id=scores["region_id"].astype(str))
    merged = t.merge(got, on="region_id", how="left", validate="one_to_one")
    p = merged["p_fused"].astype(float)
    y = merged.loc[p.notna(), "landslide"]
    return float(roc_auc_score(y, p[p.notna()])) if y.nunique() == 2 else float("nan")
