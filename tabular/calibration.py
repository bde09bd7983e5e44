"""Prior correction after class weighting or negative subsampling, and calibration checks.

**Prior correction.** A model trained on a sample in which each negative cell was kept with
probability ``r`` (and every positive kept) sees the odds of a landslide inflated by ``1 / r``;
weighting positives by ``w`` (``scale_pos_weight``) inflates them by about ``w`` more. The
population probability is recovered from the model's ``p_s`` by scaling the odds back
(Elkan 2001; King & Zeng 2001, "prior correction")::

    odds = f * p_s / (1 - p_s),   f = r / w,   p = odds / (1 + odds) = f p_s / (f p_s + 1 - p_s)

``r`` multiplies the sampling done when the table was built (``negative_rate`` in the table's
metadata, 1 for all cells) and any further negative subsampling at training (``--imbalance
subsample``); ``w`` is 1 without class weights. :func:`correct_prior` applies it; ``f = 1`` leaves ``p``
unchanged. The correction is monotone, so ROC-AUC and PR-AUC do not change; the Brier score and the
reliability diagram show whether it worked.

**Calibration checks.** :func:`reliability_table` bins predictions into equal-count bins (quantiles
of ``p``, so a rare class still gets populated bins) and reports the mean predicted probability
against the observed landslide rate per bin; :func:`save_reliability_plot` draws it on log axes.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from common.atomic import atomic_path


def odds_factor(negative_rate: float = 1.0, scale_pos_weight: float = 1.0) -> float:
    """``f = r / w`` of the module docstring."""
    if not 0 < negative_rate <= 1:
        raise ValueError(f"negative_rate must be in (0, 1], got {negative_rate}")
    if not scale_pos_weight > 0:
        raise ValueError(f"scale_pos_weight must be > 0, got {scale_pos_weight}")
    return float(negative_rate) / float(scale_pos_weight)


def correct_prior(p: np.ndarray, factor: float) -> np.ndarray:
    """``f p / (f p + 1 - p)``: probabilities with their odds scaled by ``factor`` (same dtype as ``p``)."""
    if factor == 1.0:
        return p
    p = np.asarray(p)
    num = factor * p
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / (num + (1.0 - p))
    return out.astype(p.dtype, copy=False)


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Per equal-count bin of ``p``: ``bin, n, p_mean, observed_rate, p_min, p_max``."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    edges = np.linspace(0, len(p), n_bins + 1).astype(np.int64)
    rows = []
    for i in range(n_bins):
        sel = order[edges[i] : edges[i + 1]]
        if len(sel) == 0:
            continue
        rows.append(
            {
                "bin": i,
                "n": len(sel),
                "p_mean": float(p[sel].mean()),
                "observed_rate": float(y[sel].mean()),
                "p_min": float(p[sel].min()),
                "p_max": float(p[sel].max()),
            }
        )
    return pd.DataFrame(rows)


def save_reliability_plot(table: pd.DataFrame, path: str | os.PathLike[str], title: str = "") -> None:
    """Reliability diagram (mean predicted vs observed rate per bin, log-log, diagonal = perfect) as PNG."""
    import matplotlib  # noqa: PLC0415 - plotting libraries load only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - see above

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    pm = table["p_mean"].to_numpy()
    obs = table["observed_rate"].to_numpy()
    floor = max(1e-6, float(min(pm[pm > 0].min() if (pm > 0).any() else 1e-6, 1.0)) / 2)
    lo, hi = floor, 1.0
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--", label="perfect calibration")
    ax.plot(np.maximum(pm, floor), np.maximum(obs, floor), "o-", color="tab:red", label="model (equal-count bins)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("mean predicted P(landslide)")
    ax.set_ylabel("observed landslide rate")
    ax.set_title(title or "reliability (out-of-fold)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
