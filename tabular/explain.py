"""SHAP explanations of a :class:`~tabular.model.LandslideClassifier`.

``shap_values`` uses ``shap.TreeExplainer`` on the native Booster (tree-path-dependent TreeSHAP,
log-odds units); ``LandslideClassifier.contributions`` (LightGBM's ``pred_contrib=True``) computes
the same numbers and is what the per-region reasons use.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from common.atomic import atomic_path
from tabular.model import LandslideClassifier


def shap_values(model: LandslideClassifier, X: pd.DataFrame) -> tuple[np.ndarray, float]:
    """``(values (n_rows, n_features) in log-odds, expected value)`` from ``shap.TreeExplainer``."""
    import shap  # noqa: PLC0415 - shap takes ~3 s to import; predict_tabular never needs it

    explainer = shap.TreeExplainer(model._booster())
    Xe = pd.DataFrame(model.encode(X, warn=False), columns=model.feature_names_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # shap notes its LightGBM output format change
        values = explainer.shap_values(Xe)
    if isinstance(values, list):  # older shap: one array per class
        values = values[-1]
    values = np.asarray(values)
    if values.ndim == 3:
        values = values[..., -1]
    expected = np.ravel(explainer.expected_value)[-1]
    return values, float(expected)


def global_importance(model: LandslideClassifier, X: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| (log-odds) per feature, largest first: columns ``feature, mean_abs_shap, mean_shap``."""
    contrib = model.contributions(X)[:, :-1]
    table = pd.DataFrame(
        {
            "feature": model.feature_names_,
            "mean_abs_shap": np.abs(contrib).mean(axis=0),
            "mean_shap": contrib.mean(axis=0),
        }
    )
    return table.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)


def save_summary_plot(
    model: LandslideClassifier, X: pd.DataFrame, path: str | os.PathLike[str], max_display: int = 20
) -> None:
    """Write the SHAP beeswarm summary plot (PNG, matplotlib Agg) atomically to ``path``.

    Categorical features are shown by their integer level codes (see ``categorical_levels_``).
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415 - shap draws on pyplot's current figure; only here
    import shap  # noqa: PLC0415 - shap takes ~3 s to import; predict_tabular never needs it

    plt.switch_backend("Agg")  # no display: render off-screen

    contrib = model.contributions(X)[:, :-1]
    Xe = pd.DataFrame(model.encode(X, warn=False), columns=model.feature_names_)
    plt.close("all")
    shap.summary_plot(contrib, Xe, max_display=max_display, show=False)
    fig = plt.gcf()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
