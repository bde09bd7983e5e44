"""Real third-party tables (../shared/data): our CV ROC-AUC is within 0.02 of HistGradientBoosting
on the same folds. Skips cleanly where the data is absent."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from tabular.config import LGBMParams
from tabular.cv import cross_validate, make_folds
from tabular.data import load_table, prepare_training_table
from tests.conftest import shared_dataset

CASES = {
    "swiss": ("swiss_landslideml", "training.csv", "label", ["Ereignis-Nr", "xcoord", "ycoord"]),
    "ecuador": ("ecuador_lsl_spdatalarge", "lsl.csv", "lslpts", ["x", "y"]),
    "huaihua": ("huaihua_susceptibility_cf", "Sample_Data_CF.csv", "target", ["lon", "lat"]),
    "zindi": ("zindi_landslide_patchstats", "patch_features.csv", "label", ["ID"]),
}


def _compare(name: str, params: LGBMParams | None = None, n_folds: int = 5) -> tuple[float, float]:
    folder, file, target, drop = CASES[name]
    path = shared_dataset(folder) / file
    table = prepare_training_table(load_table(path), target, drop=drop, source=str(path))
    assert not set(drop) & set(table.X.columns)
    folds = make_folds(table.y, n_folds, seed=0)
    res = cross_validate(
        table.X, table.y, params=params, categorical=table.categorical, folds=folds, seed=0, progress=None
    )
    X = table.X.to_numpy(dtype=float)
    hgb_aucs = []
    with threadpool_limits(1):  # small tables: one OpenMP thread, like our pipeline's automatic choice
        for tr, va in folds:
            hgb = HistGradientBoostingClassifier(random_state=0).fit(X[tr], table.y[tr])
            hgb_aucs.append(roc_auc_score(table.y[va], hgb.predict_proba(X[va])[:, 1]))
    ours, ref = res.summary["roc_auc_mean"], float(np.mean(hgb_aucs))
    print(f"{name}: LightGBM pipeline ROC-AUC {ours:.3f} vs HistGradientBoosting {ref:.3f}")
    return ours, ref


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["ecuador", "swiss", "huaihua"])
def test_real_table_matches_hgb(name):
    ours, ref = _compare(name)
    assert ours >= ref - 0.02


@pytest.mark.real_data
@pytest.mark.slow
def test_zindi_matches_hgb():
    ours, ref = _compare("zindi", LGBMParams(learning_rate=0.1, num_boost_round=400, early_stopping_rounds=30))
    assert ours >= ref - 0.02
