"""StackingFuser: fitted on joined OOF tables, calibrated, JSON round trip, fallbacks, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score

from fusion.stacking import StackingFuser, _fit_linear, join_oof, load_fuser, logit, reliability_plot


def _oof(n: int = 1200, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two base models with independent errors; the imagery one is over-confident."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = 2 * y - 1
    pt = 1 / (1 + np.exp(-(1.0 * s + rng.normal(0, 1.3, n))))
    pi = 1 / (1 + np.exp(-(4.0 * s + rng.normal(0, 4.0, n))))
    ids = np.arange(1000, 1000 + n)
    return (
        pd.DataFrame({"region_id": ids, "y_true": y, "p_oof": pt, "fold": ids % 5}),
        pd.DataFrame({"region_id": ids[::-1], "y_true": y[::-1], "p_oof": pi[::-1], "fold": 0}),
    )


def test_fused_beats_each_base_model_on_new_data() -> None:
    t, i = _oof(seed=0)
    fuser = StackingFuser().fit_oof(t, i)
    t2, i2 = _oof(seed=1)
    j = join_oof(t2, i2)
    p = fuser.predict_proba(j[["p_tabular", "p_imagery"]])[:, 1]
    auc_f = roc_auc_score(j.y_true, p)
    assert auc_f > roc_auc_score(j.y_true, j.p_tabular) + 0.01
    assert auc_f > roc_auc_score(j.y_true, j.p_imagery) + 0.01
    # calibrated: better Brier than the over-confident imagery model, mean close to the base rate
    assert brier_score_loss(j.y_true, p) < brier_score_loss(j.y_true, j.p_imagery)
    assert abs(p.mean() - j.y_true.mean()) < 0.03
    assert 0.05 <= fuser.threshold_ <= 0.95
    assert set(fuser.metrics_) >= {"stacker_cv_brier", "stacker_cv_roc_auc"}


@pytest.mark.parametrize("calibration", ["none", "sigmoid", "isotonic"])
def test_json_round_trip_is_exact(tmp_path: Path, calibration: str) -> None:
    t, i = _oof(240)
    fuser = StackingFuser(calibration=calibration, cv=2).fit_oof(t, i)
    fuser.meta_ = {"tabular_run_id": "abc"}
    path = fuser.save(tmp_path / "fuser.json")
    loaded = load_fuser(path)
    X = pd.DataFrame({"p_tabular": [0.1, 0.5, 0.9, np.nan, 0.3], "p_imagery": [0.2, 0.6, np.nan, 0.7, 0.99]})
    np.testing.assert_allclose(loaded.predict_proba(X), fuser.predict_proba(X))
    assert loaded.threshold_ == fuser.threshold_ and loaded.meta_ == {"tabular_run_id": "abc"}
    assert json.loads(path.read_text())["models"]["both"]["features"] == ["logit_p_tabular", "logit_p_imagery"]


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_serialised_calibrator_matches_sklearn(method: str) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 2))
    y = (z[:, 0] + rng.normal(size=300) > 0).astype(int)
    ours = _fit_linear(z, y, ("a", "b"), 1.0, method, 5, 0)
    ref = CalibratedClassifierCV(LogisticRegression(C=1.0, max_iter=1000), method=method, cv=5, ensemble=False).fit(
        z, y
    )
    np.testing.assert_allclose(ours.predict(z), ref.predict_proba(z)[:, 1], atol=1e-9)


def test_missing_modality_uses_single_modality_submodels() -> None:
    t, i = _oof(300)
    fuser = StackingFuser(cv=2).fit_oof(t, i)
    X = pd.DataFrame({"p_tabular": [0.2, 0.8, np.nan, np.nan], "p_imagery": [np.nan, np.nan, 0.2, np.nan]})
    p = fuser.predict_proba(X)[:, 1]
    tab = fuser.models_["tabular_only"].predict(logit(np.array([[0.2], [0.8]])))
    np.testing.assert_allclose(p[:2], tab)
    assert p[1] > p[0]
    assert np.isnan(p[3]) and fuser.predict(X)[3] == 0


def test_join_names_missing_ids_and_label_clashes() -> None:
    t, i = _oof(50)
    with pytest.raises(ValueError, match=r"missing from the imagery OOF: 1000"):
        join_oof(t, i[i.region_id != 1000])
    with pytest.raises(ValueError, match=r"missing from the tabular OOF: 1001"):
        join_oof(t[t.region_id != 1001], i)
    bad = i.copy()
    bad.loc[bad.region_id == 1002, "y_true"] = 1 - bad.loc[bad.region_id == 1002, "y_true"]
    with pytest.raises(ValueError, match="y_true differs.*1002"):
        join_oof(t, bad)
    with pytest.raises(ValueError, match="duplicate region_id"):
        join_oof(pd.concat([t, t.head(1)]), i)
    with pytest.raises(ValueError, match="missing column"):
        join_oof(t.drop(columns=["p_oof"]), i)
    partial = join_oof(t, i[i.region_id != 1000], allow_partial=True)
    assert np.isnan(partial.set_index("region_id").loc[1000, "p_imagery"])


def test_region_ids_match_across_int_and_str() -> None:
    t, i = _oof(40)
    i["region_id"] = i["region_id"].astype(str)
    assert len(join_oof(t, i)) == 40


def test_reliability_plot_and_brier(tmp_path: Path) -> None:
    t, i = _oof(300)
    j = join_oof(t, i)
    briers = reliability_plot(j.y_true.to_numpy(), {"tabular": j.p_tabular.to_numpy()}, tmp_path / "rel.png")
    assert (tmp_path / "rel.png").stat().st_size > 1000
    assert briers["tabular"] == pytest.approx(brier_score_loss(j.y_true, j.p_tabular))


def test_load_fuser_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fusion model not found"):
        load_fuser(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_fuser(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a stacking-fuser JSON"):
        load_fuser(other)
