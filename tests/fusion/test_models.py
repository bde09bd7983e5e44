"""fusion.models: the one default policy and the one threshold rule of every fused path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.models import Models
from fusion.region_features import IMAGERY_FEATURES
from fusion.scoring import RegionScorer
from fusion.stacking import StackingFuser
from tests.fusion.fakes import FakeSegmenter, FakeTabular


def _fuser() -> StackingFuser:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    pt = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 200), 0.01, 0.99)
    pi = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.2, 200), 0.01, 0.99)
    return StackingFuser().fit(pd.DataFrame({"p_tabular": pt, "p_imagery": pi}), y)


def test_default_policy() -> None:
    tab, seg, fus = FakeTabular(), FakeSegmenter(), _fuser()
    assert Models(tab, seg, fus).default_policy() == "stacked"
    assert Models(tab, None, fus).default_policy() == "stacked"
    assert Models(tab, seg, None).default_policy() == "any"
    assert Models(tab, None, None).default_policy() == "tabular"
    assert Models(None, seg, None).default_policy() == "imagery"
    assert RegionScorer.of((tab, seg, None)).crosscheck_config.policy == "any"


def test_thresholds_come_from_the_fuser_else_each_models_own() -> None:
    seg = FakeSegmenter()
    seg.threshold = 0.3
    tab = FakeTabular()
    tab.threshold_ = 0.6
    assert Models(tab, seg, None).thresholds() == {"tabular": 0.6, "imagery": 0.3, "fused": 0.5}
    fus = _fuser()
    t = Models(tab, seg, fus).thresholds()
    assert t == {
        "tabular": pytest.approx(fus.base_thresholds_["tabular"]),
        "imagery": pytest.approx(fus.base_thresholds_["imagery"]),
        "fused": pytest.approx(fus.threshold_),
    }


def test_models_unpack_and_check() -> None:
    models = Models.of((FakeTabular(), None, None))
    tab, seg, fus = models
    assert seg is None and fus is None and tab is models.tabular
    assert models.check() == ""
    with pytest.raises(ValueError, match="needs a tabular model, an imagery model, or both"):
        Models().check()
    with pytest.raises(ValueError, match="stacked.*fusion-model"):
        models.crosscheck_config("stacked")


def test_score_evidence_takes_rows_without_tabular_evidence() -> None:
    scorer = RegionScorer.of((FakeTabular(), FakeSegmenter(), None))
    X = pd.DataFrame({"slope_deg": [50.0, np.nan], "rain_7d_mm": [1.0, np.nan]})
    img = pd.DataFrame(np.nan, index=range(2), columns=list(IMAGERY_FEATURES))
    img.loc[1, "img_patch_prob"] = 0.9
    out = scorer.score_evidence(["a", "b"], X, img, ["", "no factors"], has_tabular=np.array([True, False]))
    assert out["evidence"].tolist() == ["tabular_only", "imagery_only"]
    assert out["decision"].tolist() == [1, 1] and out.loc[1, "note"] == "no factors"
    assert out.loc[0, "top_features"].startswith("slope_deg") and out.loc[1, "top_features"] == ""
