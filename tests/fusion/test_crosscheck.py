"""Cross-check: agreement, reasons, policies and missing-modality fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.crosscheck import POLICIES, CrosscheckConfig, crosscheck

PT = [0.9, 0.1, 0.9, 0.1, 0.7, np.nan]
PI = [0.9, 0.1, 0.1, 0.9, np.nan, 0.8]


def test_agreement_evidence_and_reasons() -> None:
    out = crosscheck(PT, PI, CrosscheckConfig(policy="any"))
    assert out["evidence"].tolist() == ["both", "both", "both", "both", "tabular_only", "imagery_only"]
    assert out["agree"].tolist()[:4] == [True, True, False, False]
    assert out["agree"].isna().tolist()[4:] == [True, True]
    assert "imagery sees a scar" in out.loc[3, "reason"] and "make one unlikely" in out.loc[3, "reason"]
    assert "imagery sees no scar" in out.loc[2, "reason"]
    assert out.loc[4, "reason"].startswith("no image")
    assert out.loc[5, "reason"].startswith("no tabular row")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("tabular", [1, 0, 1, 0, 1, 1]),
        ("imagery", [1, 0, 0, 1, 1, 1]),
        ("any", [1, 0, 1, 1, 1, 1]),
        ("both", [1, 0, 0, 0, 1, 1]),
        ("weighted", [1, 0, 1, 1, 1, 1]),  # (0.9 + 0.1) / 2 = 0.5 >= 0.5
    ],
)
def test_policies_and_fallback(policy: str, expected: list[int]) -> None:
    out = crosscheck(PT, PI, CrosscheckConfig(policy=policy))
    assert out["decision"].tolist() == expected


def test_weighted_uses_the_weight() -> None:
    cfg = CrosscheckConfig(policy="weighted", imagery_weight=0.8, weighted_threshold=0.6)
    out = crosscheck([0.1, 0.9], [0.9, 0.1], cfg)
    assert out["p_fused"].tolist() == pytest.approx([0.74, 0.26])
    assert out["decision"].tolist() == [1, 0]


def test_stacked_policy_needs_and_uses_p_fused() -> None:
    with pytest.raises(ValueError, match="stacked"):
        crosscheck([0.5], [0.5], CrosscheckConfig(policy="stacked"))
    out = crosscheck(
        [0.9, 0.9], [0.9, 0.9], CrosscheckConfig(policy="stacked", fused_threshold=0.5), p_fused=[0.2, 0.8]
    )
    assert out["decision"].tolist() == [0, 1]


def test_no_evidence_gives_an_unknown_decision() -> None:
    """A region with neither a tabular row nor an image is "unknown", never "no landslide"."""
    for policy in POLICIES:
        out = crosscheck([np.nan, 0.9], [np.nan, 0.9], CrosscheckConfig(policy=policy), p_fused=[np.nan, 0.9])
        assert out.loc[0, "evidence"] == "none" and pd.isna(out.loc[0, "decision"])
        assert out.loc[1, "decision"] == 1


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="policy"):
        CrosscheckConfig(policy="majority")
    with pytest.raises(ValueError, match="p_tabular"):
        crosscheck([1.2], [0.5])
    with pytest.raises(ValueError, match="p_imagery"):
        crosscheck([0.2, 0.3], [0.5])
