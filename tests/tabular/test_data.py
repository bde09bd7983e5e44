"""Table loading and validation: every bad input gives a ValueError/FileNotFoundError naming it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabular.data import encode_target, load_table, prepare_training_table


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_csv_and_parquet_roundtrip(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "landslide": [0, 1]})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        got = load_table(tmp_path / name)
        assert list(got.columns) == ["a", "b", "landslide"]
        assert got["a"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("missing.csv", None, "not found"),
        ("t.xlsx", "a,b\n1,2\n", "unsupported format"),
        ("empty.csv", "", "empty file"),
        ("header.csv", "a,b,landslide\n", "no data rows"),
        ("dup.csv", "a,a,landslide\n1,2,0\n", "duplicate column names \\['a'\\]"),
        ("bad.parquet", "not parquet", "unreadable Parquet"),
    ],
)
def test_load_errors(tmp_path, name, content, pattern):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=pattern):
        load_table(path)


def test_binary_garbage_csv_is_rejected(tmp_path):
    p = tmp_path / "g.csv"
    p.write_bytes(b"\xff\xfe\x00\x81\x92" * 50)
    with pytest.raises(ValueError, match="g.csv"):
        load_table(p)


@pytest.mark.parametrize(
    "values, positive, expected",
    [
        ([0, 1, 1, 0], None, [0, 1, 1, 0]),
        ([True, False, True, True], None, [1, 0, 1, 1]),
        (["yes", "no", "no", "yes"], None, [1, 0, 0, 1]),
        (["slide", "stable", "slide", "stable"], "slide", [1, 0, 1, 0]),
        ([2, 5, 5, 2], "5", [0, 1, 1, 0]),
    ],
)
def test_encode_target(values, positive, expected):
    assert encode_target(pd.Series(values, name="t"), positive).tolist() == expected


@pytest.mark.parametrize(
    "values, positive, pattern",
    [
        ([1, 1, 1], None, "single class"),
        ([0, 1, 2], None, "3 classes"),
        (["a", "b", "a"], None, "pass --positive"),
        (["a", "b", "a"], "c", "not found in target"),
        ([0, None, 1], None, "missing values"),
    ],
)
def test_encode_target_errors(values, positive, pattern):
    with pytest.raises(ValueError, match=pattern):
        encode_target(pd.Series(values, name="t"), positive)


def _frame(n=20):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "region_id": np.arange(n) + 100,
            "x": rng.normal(size=n),
            "lith": rng.choice(["a", "b"], n),
            "landslide": np.arange(n) % 2,
        }
    )


def test_prepare_splits_features_ids_and_categoricals():
    t = prepare_training_table(_frame(), "landslide")
    assert list(t.X.columns) == ["x", "lith"]
    assert t.categorical == ["lith"]
    assert t.ids.tolist() == list(range(100, 120))
    assert t.id_column == "region_id"


@pytest.mark.parametrize(
    "mutate, kwargs, pattern",
    [
        (lambda d: d, {"target": "nope"}, "target column 'nope' not found"),
        (lambda d: d, {"drop": ["zz"]}, "--drop columns not found: \\['zz'\\]"),
        (lambda d: d.assign(c=np.nan), {}, "'c' is all NaN"),
        (lambda d: d.assign(c=7.0), {}, "'c' is constant"),
        (lambda d: d.assign(c=["1.5"] * 19 + ["abc"]), {}, "'c' has non-numeric value 'abc'"),
        (lambda d: d, {"group": "g"}, "--group column 'g' not found"),
        (lambda d: d.drop(columns=["x", "lith"]), {}, "no feature columns"),
    ],
)
def test_prepare_errors(mutate, kwargs, pattern):
    kwargs = {"target": "landslide", **kwargs}
    target = kwargs.pop("target")
    with pytest.raises(ValueError, match=pattern):
        prepare_training_table(mutate(_frame()), target, **kwargs)
