"""Parquet -> Parquet scoring, sequential vs overlapped stages, side by side on the same table and model.

``python benchmarks/score_overlap_bench.py --table DIR [--work DIR] [--repeats 3] [--no-compiled]``

``DIR`` is a cell table from ``python -m pipelines.make_table --like carinthia --rows N --out DIR``. A
model like ``benchmarks/susceptibility_bench.py``'s (63 leaves, learning rate 0.1, ``--rounds`` rounds)
is trained on the first ``--train-rows`` rows (saved in ``--work`` and reused), compiled with lleaves
(``--compile-cache`` in ``--work``), then :func:`tabular.large.local.score_dataset` scores every row with
``overlap=False`` (read, encode, predict, write one after the other) and ``overlap=True`` (reader, encoder
and writer threads around the prediction), alternating, best of ``--repeats``. Both outputs are
checked equal row for row. Prints a Markdown table with rows/s and the ratio overlapped / sequential.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def _model(table: str, work: Path, train_rows: int, rounds: int, threads: int):
    import lightgbm as lgb

    from tabular.large.core import build_binned_dataset
    from tabular.large.source import FeatureEncoder, TableSource, discover_levels
    from tabular.model import LandslideClassifier

    model_file, meta_file = work / "model.lgb", work / "meta.json"
    if not model_file.exists():
        src = TableSource(table)
        features = [c for c in src.columns if c not in ("x", "y", "slide", "partition") and src.is_numeric(c)]
        cats = [c for c in ("geomorphons", "clc") if c in features]
        levels = discover_levels(src, cats)
        enc = FeatureEncoder(features, levels)
        rows = np.arange(min(train_rows, src.num_rows))
        y = src.read_columns(["slide"], np.float32)["slide"][rows]
        ds = build_binned_dataset(
            src, enc, y, [features.index(c) for c in cats], rows=rows, sample_rows=50_000, num_threads=threads
        )
        params = {"objective": "binary", "num_leaves": 63, "learning_rate": 0.1, "min_data_in_leaf": 100}
        booster = lgb.train({**params, "num_threads": threads, "verbosity": -1, "seed": 0}, ds, rounds)
        booster.save_model(str(model_file))
        meta = {
            "feature_names": features,
            "categorical_levels": levels,
            "threshold": 0.5,
            "best_iteration": rounds,
            "target": "slide",
        }
        meta_file.write_text(json.dumps(LandslideClassifier.from_booster(booster, meta).metadata()))
    meta = json.loads(meta_file.read_text())
    return LandslideClassifier.from_booster(lgb.Booster(model_file=str(model_file)), meta)


def stage_seconds(src, model, batch_rows: int, out: Path) -> dict[str, float]:
    """Seconds of each stage of one sequential pass: Arrow read, encode, predict, Parquet encode + write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tabular.large.source import FeatureEncoder, column_numpy

    enc = FeatureEncoder(model.feature_names_, model.categorical_levels_)
    cols = [*model.feature_names_, "x", "y"]
    dtype = np.float64 if model.is_compiled else np.float32
    t = dict.fromkeys(("read", "encode", "predict", "write"), 0.0)
    schema = pa.schema([("x", pa.float64()), ("y", pa.float64()), ("p_landslide", pa.float32()), ("label", pa.int8())])
    it = iter(src.batches(cols, batch_rows))
    with pq.ParquetWriter(out, schema, compression="zstd") as pw:
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            t1 = time.perf_counter()
            t["read"] += t1 - t0
            if batch is None:
                break
            X = enc.encode(batch, dtype)
            t2 = time.perf_counter()
            p = model._predict_positive(X).astype(np.float32)
            t3 = time.perf_counter()
            xs, ys = (column_numpy(batch.column(batch.schema.get_field_index(c))) for c in ("x", "y"))
            arrays = [pa.array(xs), pa.array(ys), pa.array(p), pa.array((p >= 0.5).astype(np.int8))]
            pw.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            t4 = time.perf_counter()
            t["encode"] += t2 - t1
            t["predict"] += t3 - t2
            t["write"] += t4 - t3
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--work", default=None, help="model and compile cache (default: a temporary folder)")
    ap.add_argument("--train-rows", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-rows", type=int, default=262_144)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compiled", action="store_true", help="LightGBM's Booster.predict instead of lleaves")
    a = ap.parse_args()

    import pyarrow.dataset as pads

    from tabular.large.local import score_dataset
    from tabular.large.source import TableSource

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = _model(a.table, work, a.train_rows, a.rounds, a.threads)
        model.params_.num_threads = a.threads
        compile_s = 0.0
        if not a.no_compiled:
            t0 = time.perf_counter()
            model.compile(str(work / "compiled"), num_threads=a.threads)
            compile_s = time.perf_counter() - t0
        src = TableSource(a.table)
        coords = src.coord_columns()
        stages = stage_seconds(src, model, a.batch_rows, Path(tmp) / "stages.parquet")
        best: dict[bool, tuple[float, float]] = {}
        for _ in range(a.repeats):
            for overlap in (False, True):
                out = Path(tmp) / f"out-{overlap}"
                st = score_dataset(src, model, out, coords=coords, batch_rows=a.batch_rows, overlap=overlap)
                if overlap not in best or st.seconds < best[overlap][0]:
                    best[overlap] = (st.seconds, st.predict_seconds)
        seq = pads.dataset(Path(tmp) / "out-False").to_table()
        ovl = pads.dataset(Path(tmp) / "out-True").to_table()
        if not seq.equals(ovl):
            raise SystemExit("overlapped output differs from the sequential output")
        n = src.num_rows
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}; "
        f"{n:,} rows, {len(model.feature_names_)} features, {a.rounds} trees x 63 leaves, "
        f"{'compiled (lleaves, compile ' + format(compile_s, '.1f') + ' s)' if not a.no_compiled else 'Booster.predict'}, "
        f"{a.threads} threads, batch {a.batch_rows:,}, best of {a.repeats}; outputs equal row for row\n"
        f"load: {load}\n"
    )
    total = sum(stages.values())
    print("| stage (one sequential pass) | seconds | share | rows/s alone |")
    print("|---|---:|---:|---:|")
    for k, v in stages.items():
        print(f"| {k} | {v:.2f} | {v / total:.0%} | {n / v:,.0f} |")
    print()
    print("| mode | seconds | rows/s end to end | predict s | ratio vs sequential |")
    print("|---|---:|---:|---:|---:|")
    for overlap in (False, True):
        s, p = best[overlap]
        print(
            f"| {'overlapped' if overlap else 'sequential'} | {s:.2f} | {n / s:,.0f} | {p:.2f} | "
            f"{best[False][0] / s:.2f}x |"
        )


if __name__ == "__main__":
    main()
