"""LandslideClassifier: column matching, categorical levels, thresholds, SHAP agreement."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tabular.config import LGBMParams
from tabular.explain import global_importance, save_summary_plot, shap_values
from tabular.model import LandslideClassifier
from tabular.synthetic import make_region_table

SMALL = LGBMParams(num_boost_round=200, early_stopping_rounds=20, num_leaves=7)


@pytest.fixture(scope="module")
def data():
    df = make_region_table(1500, seed=5)
    X = df.drop(columns=["region_id", "lon", "lat", "landslide"])
    return X, df["landslide"].to_numpy()


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return LandslideClassifier(SMALL, seed=1).fit(X.iloc[:1000], y[:1000])


def test_learns_signal_and_schema(fitted, data):
    X, y = data
    p = fitted.predict_proba(X.iloc[1000:])
    assert p.shape == (500, 2)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert roc_auc_score(y[1000:], p[:, 1]) > 0.75
    assert fitted.feature_names_ == list(X.columns)
    assert set(fitted.categorical_levels_) == {"lithology", "land_cover"}
    assert fitted.categorical_levels_["lithology"] == sorted(fitted.categorical_levels_["lithology"])
    assert 1 <= fitted.best_iteration_ < 200
    n_pos = y[:1000].sum()
    assert fitted.scale_pos_weight_ == pytest.approx((1000 - n_pos) / n_pos)


def test_predict_uses_stored_threshold(fitted, data):
    X, _ = data
    p = fitted.predict_proba(X)[:, 1]
    fitted.threshold_ = 0.8
    try:
        assert fitted.predict(X).tolist() == (p >= 0.8).astype(int).tolist()
    finally:
        fitted.threshold_ = 0.5


def test_columns_matched_by_name_and_extras_ignored(fitted, data):
    X, _ = data
    shuffled = X[X.columns[::-1]].assign(extra=1.0)
    assert np.array_equal(fitted.predict_proba(shuffled), fitted.predict_proba(X))


def test_missing_columns_named(fitted, data):
    X, _ = data
    with pytest.raises(ValueError, match=r"missing feature columns \['slope_deg', 'ndvi'\]"):
        fitted.predict_proba(X.drop(columns=["slope_deg", "ndvi"]))


def test_unseen_levels_become_missing_and_are_counted(fitted, data):
    X, _ = data
    rows = X.iloc[:5].copy()
    rows["lithology"] = rows["lithology"].astype(str)
    rows.iloc[[0, 3], rows.columns.get_loc("lithology")] = "basalt"
    with pytest.warns(UserWarning, match="lithology"):
        p_unseen = fitted.predict_proba(rows)[:, 1]
    assert fitted.last_unseen_counts_ == {"lithology": 2}
    as_missing = rows.copy()
    as_missing["lithology"] = None
    p_missing = fitted.predict_proba(as_missing)[:, 1]
    assert np.allclose(p_unseen[[0, 3]], p_missing[[0, 3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.predict_proba(X.iloc[:5])  # known levels: no warning
    assert fitted.last_unseen_counts_ == {}


def test_numeric_categorical_levels_match_across_int_and_float():
    rng = np.random.default_rng(0)
    code = rng.choice([3, 7, 9], 400)
    X = pd.DataFrame({"code": code, "x": rng.normal(size=400)})
    y = ((code == 7) ^ (rng.uniform(size=400) < 0.1)).astype(int)
    clf = LandslideClassifier(SMALL, categorical=["code"]).fit(X, y)
    assert clf.categorical_levels_ == {"code": ["3", "7", "9"]}
    as_float = X.assign(code=X["code"].astype(float))
    assert np.allclose(clf.predict_proba(as_float), clf.predict_proba(X))
    assert clf.last_unseen_counts_ == {}


def test_non_numeric_value_at_predict(fitted, data):
    X, _ = data
    bad = X.iloc[:3].copy()
    bad["slope_deg"] = ["12", "steep", "3"]
    with pytest.raises(ValueError, match="'slope_deg' has non-numeric value 'steep'"):
        fitted.predict_proba(bad)


def test_fixed_rounds_without_early_stopping(data):
    X, y = data
    clf = LandslideClassifier(SMALL).fit(X.iloc[:500], y[:500], num_boost_round=17)
    assert clf.best_iteration_ == 17
    assert clf.booster_.current_iteration() == 17


def test_shap_treeexplainer_matches_pred_contrib(fitted, data):
    X, _ = data
    sub = X.iloc[:200]
    values, expected = shap_values(fitted, sub)
    contrib = fitted.contributions(sub)
    assert values.shape == (200, X.shape[1])
    assert np.allclose(values, contrib[:, :-1], atol=1e-6)
    assert np.allclose(expected, contrib[0, -1], atol=1e-6)
    # SHAP is additive: bias + contributions = raw score (log-odds)
    raw = fitted.booster_.predict(fitted.encode(sub), raw_score=True, num_iteration=fitted.best_iteration_)
    assert np.allclose(contrib.sum(axis=1), raw, atol=1e-6)


def test_explain_top_k_reasons(fitted, data):
    X, _ = data
    sub = X.iloc[:50]
    reasons = fitted.explain(sub, top_k=3)
    contrib = fitted.contributions(sub)[:, :-1]
    assert list(reasons.columns[:3]) == ["reason_1_feature", "reason_1_value", "reason_1_shap"]
    for i in range(50):
        order = np.argsort(-np.abs(contrib[i]))[:3]
        assert reasons.iloc[i]["reason_1_feature"] == X.columns[order[0]]
        assert reasons.iloc[i]["reason_3_shap"] == pytest.approx(contrib[i, order[2]])
        assert reasons.iloc[i]["reason_1_value"] == sub.iloc[i][X.columns[order[0]]]
    assert (reasons["reason_1_shap"].abs() >= reasons["reason_2_shap"].abs()).all()


def test_global_importance_and_plot(fitted, data, tmp_path):
    X, _ = data
    imp = global_importance(fitted, X.iloc[:300])
    assert imp["mean_abs_shap"].is_monotonic_decreasing
    assert set(imp["feature"]) == set(X.columns)
    # the mechanism is driven by rainfall and slope; they rank above elevation and road distance
    rank = {f: i for i, f in enumerate(imp["feature"])}
    assert min(rank["rain_7d_mm"], rank["slope_deg"]) < rank["dist_road_m"]
    png = tmp_path / "s.png"
    save_summary_plot(fitted, X.iloc[:300], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metadata_roundtrip(fitted, data):
    X, _ = data
    rebuilt = LandslideClassifier.from_booster(fitted.booster_, fitted.metadata())
    assert np.array_equal(rebuilt.predict_proba(X.iloc[:20]), fitted.predict_proba(X.iloc[:20]))
    bad = dict(fitted.metadata(), feature_names=["a"])
    with pytest.raises(ValueError, match="do not match"):
        LandslideClassifier.from_booster(fitted.booster_, bad)


def test_scikit_learn_conventions(data):
    from sklearn.exceptions import NotFittedError

    X, y = data
    clf = LandslideClassifier(None, seed=5, categorical=("lithology", "land_cover"))
    assert clf.params is None and clf.categorical == ("lithology", "land_cover")  # stored unchanged
    assert not hasattr(clf, "threshold_") and not hasattr(clf, "booster_")
    for call in (lambda: clf.predict_proba(X), lambda: clf.set_threshold(0.3), lambda: clf.metadata()):
        with pytest.raises(NotFittedError):
            call()
    clf.fit(X.iloc[:400], y[:400], num_boost_round=5)
    assert clf.params is None and clf.params_ == LGBMParams()  # defaults resolved in fit, as params_
    assert clf.threshold_ == 0.5 and clf.set_threshold(0.3) is clf and clf.threshold_ == 0.3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clf.set_threshold(1.5)
