"""fusion.evaluation: the main job's held-out evaluation as a library call."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.evaluation import evaluate_held_out, fused_roc_auc


def _scores(n: int = 80) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    y = (np.arange(n) % 3 == 0).astype(int)
    truth = pd.DataFrame({"region_id": np.arange(n), "landslide": y})
    pt = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0, 1)
    pi = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.2, n), 0, 1)
    scores = pd.DataFrame(
        {
            "region_id": np.arange(n)[::-1],
            "p_tabular": pt[::-1],
            "p_imagery": pi[::-1],
            "p_fused": ((pt + pi) / 2)[::-1],
        }
    )
    scores["agree"] = (scores["p_tabular"] >= 0.5) == (scores["p_imagery"] >= 0.5)
    return truth, scores


def test_evaluate_held_out_joins_by_id_and_names_the_metrics() -> None:
    truth, scores = _scores()
    ev = evaluate_held_out(truth, scores, {"tabular": 0.5, "imagery": 0.5, "fused": 0.5}, n_boot=50, seed=0)
    assert ev.n == 80 and ev.n_pos == int(truth["landslide"].sum())
    assert list(ev.table["model"]) == ["tabular", "imagery", "fused", "fused - tabular", "fused - imagery"]
    m = ev.metrics()
    assert m["test_fused_roc_auc"] > 0.9 and "test_delta_fused_minus_tabular_f1_lo" in m
    assert m["agreement_rate"] == pytest.approx(scores["agree"].mean())
    assert "held-out test regions: 80" in ev.format()


def test_fused_roc_auc_over_the_regions_with_a_fused_probability() -> None:
    truth, scores = _scores()
    scores.loc[scores["region_id"] == 0, "p_fused"] = np.nan
    scores["region_id"] = scores["region_id"].astype(str)  # ids compared as text
    auc = fused_roc_auc(truth, scores)
    assert 0.9 < auc <= 1.0
    assert np.isnan(fused_roc_auc(truth.assign(landslide=0), scores))
