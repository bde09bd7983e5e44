"""Compiled (lleaves) prediction path: same probabilities as ``Booster.predict`` to 1e-9."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest

from tabular.config import LGBMParams
from tabular.model import LandslideClassifier
from tabular.synthetic import make_region_table

SMALL = LGBMParams(num_boost_round=20, early_stopping_rounds=0, num_leaves=15, min_data_in_leaf=5)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    df = make_region_table(1500, seed=7)
    X = df.drop(columns=["region_id", "lon", "lat", "landslide"])
    return X, df["landslide"].to_numpy()


def _booster_p(clf: LandslideClassifier, X: pd.DataFrame) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        Xe = clf.encode(X)
    return clf._booster().predict(Xe, num_iteration=clf.best_iteration_ or None)


def test_compiled_matches_booster_on_region_table(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    clf = LandslideClassifier(SMALL, seed=3).fit(X.iloc[:1000], y[:1000])
    assert set(clf.categorical_levels_) == {"lithology", "land_cover"}
    # the trees really split on the categorical columns (else this test would not cover them)
    used = dict(zip(clf.feature_names_, clf._booster().feature_importance("split"), strict=True))
    assert used["lithology"] > 0
    expected = clf.predict_proba(X)
    t = time.perf_counter()
    clf.compile()
    compile_s = time.perf_counter() - t
    assert clf.is_compiled and compile_s < 30
    got = clf.predict_proba(X)
    assert got.shape == (len(X), 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert np.all((got[:, 1] > 0) & (got[:, 1] < 1))  # probabilities, not raw scores
    np.testing.assert_allclose(got[:, 1], _booster_p(clf, X), rtol=0, atol=1e-9)
    # multi-threaded compiled prediction gives the same numbers
    clf.compile(num_threads=2)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=0, atol=1e-9)
    assert clf.predict(X).tolist() == (expected[:, 1] >= clf.threshold_).astype(int).tolist()
    assert clf.predict_proba(X.iloc[:0]).shape == (0, 2)
    np.testing.assert_allclose(clf.predict_proba(X.iloc[[5]]), expected[[5]], rtol=0, atol=1e-9)


def test_compiled_unseen_levels_and_nan(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    rng = np.random.default_rng(0)
    Xtr = X.iloc[:1000].copy()
    # missing values at training time, so the trees have NaN-aware splits / default directions
    for col in ("slope_deg", "rain_7d_mm", "soil_moisture"):
        Xtr.loc[rng.uniform(size=len(Xtr)) < 0.15, col] = np.nan
    Xtr["lithology"] = Xtr["lithology"].astype(object)
    Xtr.loc[rng.uniform(size=len(Xtr)) < 0.1, "lithology"] = np.nan
    clf = LandslideClassifier(SMALL, seed=4).fit(Xtr, y[:1000])
    Xte = X.iloc[1000:].copy()
    Xte["lithology"] = Xte["lithology"].astype(object)
    Xte["land_cover"] = Xte["land_cover"].astype(object)
    Xte.iloc[:40, Xte.columns.get_loc("lithology")] = "basalt_never_seen"
    Xte.iloc[40:80, Xte.columns.get_loc("land_cover")] = "glacier_never_seen"
    Xte.iloc[80:120, Xte.columns.get_loc("lithology")] = np.nan
    for col in ("slope_deg", "rain_7d_mm", "elevation_m"):
        Xte.loc[rng.uniform(size=len(Xte)) < 0.2, col] = np.nan
    Xte.iloc[120:130, :] = np.nan  # all-missing rows
    with pytest.warns(UserWarning, match="not seen in training"):
        expected = clf.predict_proba(Xte)
    clf.compile()
    with pytest.warns(UserWarning, match="not seen in training"):
        got = clf.predict_proba(Xte)
    assert clf.last_unseen_counts_ == {"lithology": 40, "land_cover": 40}
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    # a code beyond the known levels (e.g. from a future level list) goes right in both engines
    Xe = clf.encode(Xte, warn=False)
    j = clf.feature_names_.index("lithology")
    Xe[:50, j] = len(clf.categorical_levels_["lithology"]) + 3
    np.testing.assert_allclose(
        clf.compiled_.predict(Xe, n_jobs=1),
        clf._booster().predict(Xe, num_iteration=clf.best_iteration_),
        rtol=0,
        atol=1e-9,
    )


def test_compiled_respects_best_iteration_and_cache(data: tuple[pd.DataFrame, np.ndarray], tmp_path) -> None:
    X, y = data
    clf = LandslideClassifier(SMALL, seed=5).fit(X.iloc[:1000], y[:1000])
    clf.best_iteration_ = 7  # as if early stopping had picked round 7 of 20
    expected = clf.predict_proba(X)
    all_trees = clf._booster().predict(clf.encode(X), num_iteration=20)
    assert np.abs(all_trees - expected[:, 1]).max() > 1e-3
    clf.compile(tmp_path / "cache")
    assert clf.compiled_.num_trees() == 7
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=0, atol=1e-9)
    files = list((tmp_path / "cache").glob("lleaves_*.o"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    # a second compile loads the cached object code and predicts the same
    clf.compile(tmp_path / "cache")
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=0, atol=1e-9)
    # changing the rounds kept makes the compiled forest stale: an error, not silently wrong numbers
    clf.best_iteration_ = 20
    with pytest.raises(ValueError, match="stale"):
        clf.predict_proba(X)
    clf.compile(tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("lleaves_*.o"))) == 2
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], all_trees, rtol=0, atol=1e-9)
    # refitting drops the compiled forest (back to the Booster)
    clf.fit(X.iloc[:500], y[:500], num_boost_round=5)
    assert not clf.is_compiled


def test_compile_errors() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        LandslideClassifier().compile()


def test_predict_cli_compiled_matches_default(
    data: tuple[pd.DataFrame, np.ndarray], tmp_path, tracking_uri: str
) -> None:
    import json

    import mlflow

    from common.cli import run_main
    from pipelines import predict_tabular
    from tabular.serving import BOOSTER_FILE, METADATA_FILE

    X, y = data
    clf = LandslideClassifier(SMALL, seed=6).fit(X.iloc[:1000], y[:1000])
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    clf._booster().save_model(str(model_dir / BOOSTER_FILE))
    (model_dir / METADATA_FILE).write_text(json.dumps(clf.metadata()), encoding="utf-8")
    table = make_region_table(300, seed=11).drop(columns=["landslide"])
    table.to_csv(tmp_path / "new.csv", index=False)
    outs = {}
    for name, extra in (("default", []), ("compiled", ["--compiled", "--compile-cache", str(tmp_path / "cc")])):
        outs[name] = tmp_path / f"{name}.csv"
        argv = [
            "--model",
            str(model_dir),
            "--data",
            str(tmp_path / "new.csv"),
            "--out",
            str(outs[name]),
            "--top-k",
            "0",
        ]
        assert run_main(predict_tabular.main, [*argv, "--experiment", "pc", *extra]) == 0
    a, b = pd.read_csv(outs["default"]), pd.read_csv(outs["compiled"])
    np.testing.assert_allclose(b["p_landslide"], a["p_landslide"], rtol=0, atol=1e-9)
    assert b["label"].tolist() == a["label"].tolist()
    assert len(list((tmp_path / "cc").glob("lleaves_*.o"))) == 1
    runs = mlflow.search_runs(experiment_names=["pc"])
    assert sorted(runs["params.compiled"].tolist()) == ["False", "True"]
    assert runs["metrics.compile_seconds"].notna().sum() == 1
    assert "--compiled" in predict_tabular.COMMAND.parser().format_help()
    assert run_main(predict_tabular.main, [*argv, "--compile-cache", str(tmp_path / "cc")]) == 2


def test_all_float_table_encodes_without_copy_and_read_only() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3000, 6))
    X[rng.uniform(size=X.shape) < 0.05] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(0, 0.5, 3000) > 0).astype(int)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)], copy=False)
    clf = LandslideClassifier(SMALL, seed=2, categorical=[]).fit(df, y)
    Xe = clf.encode(df)
    np.testing.assert_array_equal(Xe, X)
    assert not Xe.flags.writeable  # a view of the caller's data must not be writable
    shuffled = df[df.columns[::-1]].assign(extra="x")  # reordered + extra column: a fresh matrix
    np.testing.assert_array_equal(clf.encode(shuffled), X)
    expected = clf.predict_proba(shuffled)
    clf.compile()
    np.testing.assert_allclose(clf.predict_proba(df), expected, rtol=0, atol=1e-9)
