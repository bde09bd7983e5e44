"""predict_tabular carries the model's id column and coding; the compile cache loads only its own code
(issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.cli import run_main
from pipelines import predict_tabular, train_tabular
from tabular.compiled import cache_key
from tabular.config import LGBMParams
from tabular.model import LandslideClassifier
from tabular.synthetic import make_region_table

FAST = ["--folds", "2", "--max-rounds", "30", "--early-stopping", "0"]


@pytest.fixture
def site_table(tmp_path: Path) -> Path:
    df = make_region_table(300, seed=4).drop(columns=["region_id"])
    df.insert(0, "site_id", [f"S{i:04d}" for i in range(len(df))])
    df["geology"] = np.arange(len(df)) % 4 + 1  # an integer-coded categorical factor
    path = tmp_path / "sites.csv"
    df.to_csv(path, index=False)
    return path


def test_predict_carries_the_id_column_and_the_categorical_coding(
    site_table: Path, tmp_path: Path, tracking_uri, capsys
) -> None:
    argv = [
        *FAST,
        "--data",
        str(site_table),
        "--id-column",
        "site_id",
        "--drop",
        "lon,lat",
        "--categorical",
        "lithology,land_cover,geology",
        "--json",
    ]
    assert run_main(train_tabular.main, argv) == 0
    import json

    model = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model_uri"]
    new = pd.read_csv(site_table).drop(columns=["landslide"]).iloc[:50]
    new["geology"] = new["geology"].astype(float).astype(str)  # "1.0": same codes, another dtype
    data = tmp_path / "new.csv"
    new.to_csv(data, index=False)
    out = tmp_path / "preds.csv"
    assert (
        run_main(predict_tabular.main, ["--model", model, "--data", str(data), "--out", str(out), "--top-k", "0"]) == 0
    )
    preds = pd.read_csv(out)
    assert preds.columns[0] == "site_id" and preds["site_id"].tolist() == new["site_id"].tolist()
    assert "geology" not in capsys.readouterr().err  # no unseen-level warning: cast to the training coding
    new["geology"] = "granite"  # a coding the model never saw: every value unseen
    new.to_csv(data, index=False)
    assert run_main(predict_tabular.main, ["--model", model, "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "categorical column 'geology': none of its values ['granite'] was seen in training" in err


def test_compile_cache_loads_only_code_compiled_from_this_model(tmp_path: Path) -> None:
    X = make_region_table(400, seed=1).drop(columns=["region_id", "landslide", "lithology", "land_cover"])
    y = make_region_table(400, seed=1)["landslide"].to_numpy()
    params = LGBMParams(num_boost_round=8, early_stopping_rounds=0, num_threads=1)
    a = LandslideClassifier(params, seed=1, categorical=[]).fit(X, y)
    b = LandslideClassifier(params, seed=2, categorical=[]).fit(X.iloc[:200], y[:200])
    cache = tmp_path / "cache"
    a.compile(cache)
    b.compile(cache)

    def cache_file(clf: LandslideClassifier) -> Path:
        return cache / f"lleaves_{cache_key(clf._booster().model_to_string(num_iteration=clf.best_iteration_))}.o"

    path_a, path_b = cache_file(a), cache_file(b)
    assert path_a != path_b and path_a.is_file() and path_b.is_file()
    path_a_bytes = path_a.read_bytes()
    path_b.write_bytes(path_a_bytes)  # swap: b's cache file now holds a's code
    fresh = LandslideClassifier(params, seed=2, categorical=[]).fit(X.iloc[:200], y[:200])
    fresh.compile(cache)  # must not load a's code under b's name
    np.testing.assert_allclose(fresh.predict_proba(X)[:, 1], fresh._booster().predict(X.to_numpy()), atol=1e-9)
    assert path_b.read_bytes() != path_a_bytes  # recompiled and rewritten with b's own digest
