"""Cross-validation folds, out-of-fold predictions, max-F1 threshold and metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from common.metrics import best_f1_threshold, binary_metrics
from tabular.config import LGBMParams
from tabular.cv import cross_validate, make_folds
from tabular.synthetic import make_region_table


def test_best_f1_threshold_is_the_maximum():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + rng.uniform(size=300) * 0.7, 0, 1)
    t = best_f1_threshold(y, p)
    best = f1_score(y, p >= t)
    for cand in np.linspace(0.01, 0.99, 99):
        assert f1_score(y, p >= cand) <= best + 1e-12


def test_binary_metrics_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    m = binary_metrics(y, p, 0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_grouped_folds_keep_groups_apart():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 30, 600)
    y = (rng.uniform(size=600) < 0.3).astype(int)
    folds = make_folds(y, 5, groups=groups, seed=0)
    covered = np.concatenate([va for _, va in folds])
    assert sorted(covered.tolist()) == list(range(600))
    for tr, va in folds:
        assert not set(groups[tr]) & set(groups[va])


def test_fold_errors():
    y = np.array([0] * 10 + [1] * 2)
    with pytest.raises(ValueError, match="smaller class has 2 rows"):
        make_folds(y, 5)
    with pytest.raises(ValueError, match="3 groups"):
        make_folds(np.array([0, 1] * 10), 5, groups=np.arange(20) % 3)


def test_cross_validate_oof_and_progress():
    df = make_region_table(900, seed=2)
    X = df.drop(columns=["region_id", "lon", "lat", "landslide"])
    y = df["landslide"].to_numpy()
    lines: list[str] = []
    res = cross_validate(
        X, y, params=LGBMParams(num_boost_round=150, num_leaves=7), n_folds=3, seed=0, progress=lines.append
    )
    assert len(lines) == 3 and lines[0].startswith("fold 1/3") and "elapsed" in lines[-1]
    assert res.oof.shape == (900,) and np.all((res.oof >= 0) & (res.oof <= 1))
    assert sorted(set(res.fold.tolist())) == [0, 1, 2]
    assert res.threshold == pytest.approx(best_f1_threshold(y, res.oof))
    assert len(res.fold_metrics) == 3
    assert res.summary["roc_auc_mean"] > 0.7
    assert res.summary["roc_auc_std"] == pytest.approx(res.fold_metrics["roc_auc"].std(ddof=1))
    # every fold's OOF AUC is computed on that fold's rows only
    from sklearn.metrics import roc_auc_score

    m0 = res.fold == 0
    assert res.fold_metrics.loc[0, "roc_auc"] == pytest.approx(roc_auc_score(y[m0], res.oof[m0]))
