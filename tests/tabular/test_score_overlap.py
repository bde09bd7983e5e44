"""Overlapped scoring of a large table (reader, encoder and writer threads around the prediction) writes
exactly what the sequential path writes, and fails the same way: one error, nothing half-written."""

from __future__ import annotations

import errno
import threading
import time

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from common.cli import UserError, run_main
from pipelines import make_table
from tabular.large.local import score_dataset
from tabular.large.source import FeatureEncoder, TableSource, discover_levels
from tabular.large.stages import BackgroundSink
from tabular.model import LandslideClassifier

ROWS = 30_000
BATCH = 2_048  # 15 batches: the queues fill and drain many times


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("ovl") / "table"
    assert (
        run_main(
            make_table.main,
            ["--rows", str(ROWS), "--out", str(out), "--rows-per-part", "11000", "--positive-rate", "0.05"],
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def model(table):
    src = TableSource(table)
    features = [c for c in src.columns if c not in ("x", "y", "slide", "partition") and src.is_numeric(c)]
    cats = [c for c in ("geomorphons", "clc") if c in features]
    levels = discover_levels(src, cats)
    levels = {c: lv[:-1] for c, lv in levels.items()}  # one level unseen: counted, NaN, same in both modes
    cols = src.read_columns([*features, "slide"])
    X = np.column_stack([cols[c].astype(np.float32) for c in features])
    for c in cats:
        j = features.index(c)
        X[:, j] = FeatureEncoder([c], levels)._codes(c, pa.array(cols[c]))
    ds = lgb.Dataset(
        X,
        cols["slide"].astype(np.float32),
        feature_name=features,
        categorical_feature=[features.index(c) for c in cats],
    )
    booster = lgb.train({"objective": "binary", "num_leaves": 15, "verbosity": -1, "seed": 0}, ds, 10)
    meta = {
        "feature_names": features,
        "categorical_levels": levels,
        "threshold": 0.05,
        "best_iteration": 10,
        "target": "slide",
    }
    return LandslideClassifier.from_booster(booster, meta)


def _score(table, model, out, overlap):
    src = TableSource(table)
    return score_dataset(src, model, out, coords=src.coord_columns(), batch_rows=BATCH, overlap=overlap)


def test_overlapped_output_equals_sequential_row_for_row(table, model, tmp_path):
    seq = _score(table, model, tmp_path / "seq", overlap=False)
    ovl = _score(table, model, tmp_path / "ovl", overlap=True)
    a = pads.dataset(tmp_path / "seq").to_table()
    b = pads.dataset(tmp_path / "ovl").to_table()
    assert a.num_rows == ROWS and a.equals(b)
    assert a.schema.metadata == b.schema.metadata
    assert (seq.rows, seq.positives, seq.p_sum, seq.unseen) == (ovl.rows, ovl.positives, ovl.p_sum, ovl.unseen)
    assert seq.unseen and 0 < seq.positives < ROWS  # the check covers unseen levels and both labels
    # the row order is the table's: coordinates match the input's
    src = TableSource(table).read_columns(["x", "y"])
    np.testing.assert_array_equal(b.column("x").to_numpy(), src["x"])


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("overlap", [False, True])
def test_reader_error_is_the_same_and_nothing_is_written(table, model, tmp_path, monkeypatch, overlap):
    original = TableSource._batches

    def failing(self, cols, batch_rows):
        for i, batch in enumerate(original(self, cols, batch_rows)):
            if i == 5:
                raise UserError(f"{self.path}: unreadable table (Parquet magic bytes not found)")
            yield batch

    monkeypatch.setattr(TableSource, "_batches", failing)
    out = tmp_path / "out"
    with pytest.raises(UserError) as info:
        _score(table, model, out, overlap=overlap)
    assert str(info.value) == f"{table}: unreadable table (Parquet magic bytes not found)"
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("overlap", [False, True])
def test_writer_error_is_the_same_and_nothing_is_written(table, model, tmp_path, monkeypatch, overlap):
    original = pq.ParquetWriter.write_batch
    calls = []

    def failing(self, batch, *a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.where))
        return original(self, batch, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", failing)
    out = tmp_path / "out"
    with pytest.raises(UserError) as info:
        _score(table, model, out, overlap=overlap)
    msg = str(info.value)
    assert "\n" not in msg and str(out) in msg and "No space left" in msg
    assert not out.exists() and _leftovers(tmp_path) == []
    assert len(calls) == 4  # the writer stopped at its error; no batch was written after it


def test_sink_consumes_in_order_and_bounds_its_queue():
    seen = []
    started = threading.Event()

    def slow(x):
        started.set()
        time.sleep(0.01)
        seen.append(x)

    with BackgroundSink(slow, depth=2) as sink:
        for i in range(20):
            sink.put(i)
            assert sink._q.qsize() <= 2
    assert seen == list(range(20))


def test_sink_error_reaches_the_producer_and_an_abort_drops_the_rest():
    def boom(x):
        if x == 3:
            raise ValueError("bad item 3")

    with pytest.raises(ValueError, match="bad item 3"), BackgroundSink(boom, depth=1) as sink:
        for i in range(100):
            sink.put(i)
    assert not sink._thread.is_alive()

    done = []
    with pytest.raises(KeyError), BackgroundSink(done.append, depth=1) as sink:
        sink.put(1)
        raise KeyError("producer failed")
    assert not sink._thread.is_alive()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encoder_blocked_fill_equals_column_by_column(dtype):
    n = 4096 * 2 + 123  # crosses row blocks, ends in a partial one
    rng = np.random.default_rng(0)
    a = rng.normal(size=n)
    b = np.where(rng.random(n) < 0.1, None, rng.integers(0, 5, n)).tolist()  # int with nulls
    c = rng.integers(1, 4, n).astype(np.int16)  # categorical, level "3" unknown
    batch = pa.RecordBatch.from_arrays([pa.array(a), pa.array(b, pa.int32()), pa.array(c)], names=["a", "b", "c"])
    enc = FeatureEncoder(["c", "a", "b"], {"c": ["1", "2"]})
    X = enc.encode(batch, dtype)
    codes = np.where(c == 3, np.nan, c - 1.0)
    expected = np.column_stack([codes, a, np.array([np.nan if v is None else v for v in b], dtype=np.float64)])
    assert X.dtype == dtype and X.flags.c_contiguous
    np.testing.assert_array_equal(X, expected.astype(dtype))
    assert enc.unseen == {"c": int((c == 3).sum())}
