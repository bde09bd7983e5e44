"""The third evidence: fusion.models.ChangeRule and RegionScorer.score_evidence with change features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.models import CHANGE, CHANGE_UNKNOWN, NO_CHANGE, ChangeRule
from fusion.region_features import IMAGERY_FEATURES
from fusion.scoring import ALL_COLUMNS, RegionScorer


class _Tab:
    feature_names_ = ["slope_deg"]
    threshold_ = 0.5

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.clip(X["slope_deg"].to_numpy() / 60.0, 0, 1)


class _Seg:
    threshold = 0.5


def _chg(share: float, m2: float, seen: float, pre: float = 3, post: float = 2) -> dict[str, float]:
    return {
        "chg_observed_share": seen,
        "chg_clear_pre": pre,
        "chg_clear_post": post,
        "chg_flagged_share": share,
        "chg_flagged_m2": m2,
        "chg_dndvi_slope": -0.3 if share > 0.05 else 0.01,
        "chg_score_mean": share,
    }


@pytest.mark.parametrize(
    ("features", "state"),
    [
        (_chg(0.40, 20_000, 1.0), CHANGE),
        (_chg(0.40, 900, 1.0), NO_CHANGE),  # a flagged patch under 1,000 m2 is noise
        (_chg(0.02, 5_000, 1.0), NO_CHANGE),  # a few percent: the detector's background on unchanged slopes
        (_chg(0.20, 3_000, 0.1), CHANGE),  # a scar in the part that was seen counts
        (_chg(0.00, 0, 0.3), CHANGE_UNKNOWN),  # mostly unseen: never "no change"
        (_chg(np.nan, 0, 0.0, 0, 0), CHANGE_UNKNOWN),  # never seen clearly
    ],
)
def test_change_state(features: dict[str, float], state: str) -> None:
    got, reason = ChangeRule().state(features)
    assert got == state
    if state == CHANGE_UNKNOWN:
        assert "unknown: no clear observation" in reason and "no change" not in reason


def test_three_evidences_fused() -> None:
    """Change makes a region likely whatever the models say; no change decides only where they have no evidence;
    unknown changes nothing. p_fused stays the trained models'."""
    scorer = RegionScorer.of((_Tab(), _Seg(), None))
    ids = ["a", "b", "c", "d", "e"]
    tab = pd.DataFrame({"slope_deg": [6.0, 50.0, np.nan, 6.0, 50.0]})
    img = pd.DataFrame(np.nan, index=range(5), columns=list(IMAGERY_FEATURES))
    img["img_patch_prob"] = [0.1, 0.1, np.nan, 0.1, 0.9]
    has_tab = tab.notna().all(axis=1).to_numpy()
    change = pd.DataFrame(
        [_chg(0.4, 20_000, 1.0), _chg(0.0, 0, 1.0), _chg(0.0, 0, 1.0), _chg(0.0, 0, 0.0, 0, 0), _chg(0.0, 0, 1.0)]
    )
    two = scorer.score_evidence(ids, tab, img, has_tabular=has_tab)
    three = scorer.score_evidence(ids, tab, img, has_tabular=has_tab, change_features=change)
    assert list(two.columns) == list(ALL_COLUMNS)  # without change evidence: the two-model rows, unchanged
    assert list(three.columns[: len(ALL_COLUMNS)]) == list(ALL_COLUMNS)
    assert {"change", "change_reason", "chg_flagged_share"} <= set(three.columns)
    np.testing.assert_array_equal(two["p_fused"].to_numpy(), three["p_fused"].to_numpy())
    assert two["decision"].tolist()[:2] == [0, 1] and two["decision"].isna().tolist()[2]
    assert three["decision"].tolist()[:3] == [1, 1, 0]  # a: raised by the change; c: seen, nothing changed
    assert three["decision"].iloc[3] == 0 and three["change"].iloc[3] == CHANGE_UNKNOWN  # d: the models' 0 stands
    assert three["decision"].iloc[4] == 1 and "predate" in three["reason"].iloc[4]  # e: no change, scar kept
    assert three["evidence"].tolist() == ["both+change", "both+change", "change_only", "both", "both+change"]
    assert "the other evidence does not see it" in three["reason"].iloc[0]
    assert three["change_reason"].iloc[0].startswith("change: vegetation loss on slopes")


def test_change_rule_rejects_bad_thresholds() -> None:
    from common.cli import UserError

    with pytest.raises(UserError, match="min_flagged_share"):
        ChangeRule(min_flagged_share=2.0)
