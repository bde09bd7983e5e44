"""Benchmark the large-table susceptibility path on a Carinthia-like table, against the study's approach.

``python benchmarks/susceptibility_bench.py --table DIR [--study-rows 1000000] [--tasks train,score,raster,study,ours,build]``

``--table`` is a dataset written by ``python -m pipelines.make_table --rows N --out DIR`` (the
generation time is that command's own output). Each measurement runs in its own spawned process, so
its peak RSS (``ru_maxrss``: LightGBM's, Arrow's and GDAL's C allocations included) is its own;
"extra" is peak minus the RSS after imports.

* ``train``: stream every row into LightGBM (``lightgbm.Sequence``: bin-bound sample pass + push
  pass) and train 100 rounds with 63 leaves (learning rate 0.1, no early stopping, no weights);
* ``score``: Parquet dataset to Parquet dataset with the compiled trees (lleaves), batch by batch;
  rows/s over the whole job (read, encode, predict, write), and the compiled predict alone;
* ``raster``: the same plus the susceptibility GeoTIFF, classes GeoTIFF and PNG;
* ``study`` vs ``ours`` on the first ``--study-rows`` rows (a contiguous band of the grid) and the
  same 3 spatial folds (1 km blocks): the study's approach (pandas ``read_parquet`` of the columns as
  float64, MinMax scaling and label encoding fitted on each training fold, scikit-learn
  ``RandomForestClassifier(n_estimators=16, max_depth=16, class_weight="balanced", n_jobs=-1)``)
  against this pipeline's streamed LightGBM (the same 100 rounds x 63 leaves), fold by fold: time,
  peak RSS and out-of-fold ROC-AUC;
* ``build``: ``build_table`` from 10 float32 rasters of ``--build-size`` squared cells and a
  polygon inventory: cells/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROUNDS, LEAVES, LR = 100, 63, 0.1


def _rss_mb() -> float:
    """Peak RSS of this process in MB: ``VmHWM`` (reset at exec, unlike ``ru_maxrss``, which a spawned
    child inherits from the forked parent), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _params(threads: int):
    from tabular.config import LGBMParams

    return LGBMParams(
        learning_rate=LR,
        num_leaves=LEAVES,
        min_data_in_leaf=100,
        feature_fraction=1.0,
        bagging_fraction=1.0,
        bagging_freq=0,
        lambda_l2=1.0,
        num_boost_round=ROUNDS,
        early_stopping_rounds=0,
        class_balance="none",
        num_threads=threads,
    )


def _plan(path: str, folds: int, threads: int):
    from tabular.config import CVConfig, ScaleConfig, TrainTabularConfig
    from tabular.large.plan import plan_table

    cfg = TrainTabularConfig(
        data=path,
        target="slide",
        cv=CVConfig(n_folds=folds, mode="spatial" if folds else "stratified", block_size_m=1000.0),
        lgbm=_params(threads),
        scale=ScaleConfig(),
        seed=0,
    )
    return cfg, plan_table(cfg)


def _task_train(a: dict, q) -> None:
    import lightgbm as lgb

    from tabular.large.core import build_binned_dataset
    from tabular.large.source import FeatureEncoder
    from tabular.model import LandslideClassifier

    base = _rss_mb()
    t0 = time.perf_counter()
    cfg, plan = _plan(a["table"], 0, a["threads"])
    enc = FeatureEncoder(plan.features, plan.levels)
    cat_idx = [j for j, c in enumerate(plan.features) if c in plan.levels]
    t1 = time.perf_counter()
    ds = build_binned_dataset(
        plan.source, enc, plan.y, cat_idx, max_bin=255, sample_rows=200_000, num_threads=a["threads"]
    )
    t2 = time.perf_counter()
    params = cfg.lgbm.booster_params(0, len(plan.y))
    booster = lgb.train(params, ds, num_boost_round=a["rounds"])
    t3 = time.perf_counter()
    meta = {
        "feature_names": plan.features,
        "categorical_levels": plan.levels,
        "threshold": 0.5,
        "best_iteration": a["rounds"],
        "target": "slide",
    }
    clf = LandslideClassifier.from_booster(booster, meta)
    clf.booster_.save_model(str(Path(a["work"]) / "model.lgb"))
    (Path(a["work"]) / "meta.json").write_text(json.dumps(clf.metadata()))
    q.put(
        {
            "rows": len(plan.y),
            "features": len(plan.features),
            "plan_s": t1 - t0,
            "bin_s": t2 - t1,
            "train_s": t3 - t2,
            "rounds": a["rounds"],
            "seconds_per_round": (t3 - t2) / a["rounds"],
            "seconds": t3 - t0,
            "peak_mb": _rss_mb(),
            "base_mb": base,
            "binned_mb": ds.num_data() * len(plan.features) / 2**20,
        }
    )


def _load_model(work: str):
    import lightgbm as lgb

    from tabular.model import LandslideClassifier

    meta = json.loads((Path(work) / "meta.json").read_text())
    return LandslideClassifier.from_booster(lgb.Booster(model_file=str(Path(work) / "model.lgb")), meta)


def _task_score(a: dict, q, raster: bool) -> None:
    from tabular.large.local import score_dataset
    from tabular.large.source import FeatureEncoder, TableSource

    base = _rss_mb()
    model = _load_model(a["work"])
    model.params_.num_threads = a["threads"]
    t0 = time.perf_counter()
    model.compile(num_threads=a["threads"])
    compile_s = time.perf_counter() - t0
    src = TableSource(a["table"])
    writer = None
    out = Path(a["work"]) / ("scores_r" if raster else "scores")
    if raster:
        from tabular.susceptibility import SusceptibilityRaster

        writer = SusceptibilityRaster(src.meta.grid_object(), Path(a["work"]) / "map" / "susceptibility.tif")
    stats = score_dataset(src, model, out, coords=("x", "y"), raster=writer, batch_rows=a["batch_rows"])
    # the compiled trees alone on one batch, for reference
    batch = next(src.batches(model.feature_names_, a["batch_rows"]))
    X = FeatureEncoder(model.feature_names_, model.categorical_levels_).encode(batch)
    t1 = time.perf_counter()
    model._predict_positive(X)
    pred_only = len(X) / (time.perf_counter() - t1)
    size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    shutil.rmtree(out, ignore_errors=True)
    q.put(
        {
            "rows": stats.rows,
            "seconds": stats.seconds,
            "rows_per_s": stats.rows_per_second,
            "predict_s": stats.predict_seconds,
            "predict_rows_per_s": pred_only,
            "compile_s": compile_s,
            "out_mb": size / 2**20,
            "peak_mb": _rss_mb(),
            "base_mb": base,
        }
    )


def _folds_file(work: str) -> Path:
    return Path(work) / "study_folds.npy"


def _task_ours(a: dict, q) -> None:
    from sklearn.metrics import roc_auc_score

    from tabular.large.core import build_binned_dataset, fit_on_positions
    from tabular.large.local import predict_folds
    from tabular.large.source import FeatureEncoder

    base = _rss_mb()
    t0 = time.perf_counter()
    cfg, plan = _plan(a["study_table"], 3, a["threads"])
    np.save(_folds_file(a["work"]), plan.fold)
    enc = FeatureEncoder(plan.features, plan.levels)
    cat_idx = [j for j, c in enumerate(plan.features) if c in plan.levels]
    ds = build_binned_dataset(plan.source, enc, plan.y, cat_idx, num_threads=a["threads"])
    params = cfg.lgbm.booster_params(0, len(plan.y))
    fits = []
    for i in range(3):
        pos = np.flatnonzero(plan.fold != i)
        fits.append(
            fit_on_positions(
                ds,
                pos,
                plan.y,
                None,
                params,
                rounds=ROUNDS,
                early_stopping=0,
                valid_fraction=0.1,
                weights=False,
                seed=i,
            )
        )
    oof, _ = predict_folds(plan.source, enc, plan, fits, 1.0, cfg.scale, 0)
    aucs = [float(roc_auc_score(plan.y[plan.fold == i], oof[plan.fold == i])) for i in range(3)]
    q.put({"seconds": time.perf_counter() - t0, "aucs": aucs, "peak_mb": _rss_mb(), "base_mb": base})


def _task_study(a: dict, q) -> None:
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import LabelEncoder, MinMaxScaler

    base = _rss_mb()
    t0 = time.perf_counter()
    df = pd.read_parquet(a["study_table"])  # the study loaded columns into pandas
    y = df.pop("slide").to_numpy()
    df = df.drop(columns=[c for c in ("x", "y", "partition") if c in df.columns])
    ff = _folds_file(a["work"])
    fold = np.load(ff) if ff.exists() else _plan(a["study_table"], 3, a["threads"])[1].fold  # the same folds
    assert len(fold) == len(y)
    load_s = time.perf_counter() - t0
    aucs = []
    for i in range(3):
        tr, te = fold != i, fold == i
        Xtr, Xte = df[tr].copy(), df[te].copy()
        for c in ("geomorphons", "clc"):  # label encoding, fitted on the training part
            enc = LabelEncoder().fit(Xtr[c].astype(str))
            codes = {v: i for i, v in enumerate(enc.classes_)}
            Xtr[c] = enc.transform(Xtr[c].astype(str))
            Xte[c] = Xte[c].astype(str).map(codes).fillna(-1).astype(int)
        scaler = MinMaxScaler().fit(Xtr)
        Xtr_s, Xte_s = scaler.transform(Xtr), scaler.transform(Xte)
        rf = RandomForestClassifier(
            n_estimators=16, max_depth=16, class_weight="balanced", n_jobs=a["threads"], random_state=0
        )
        rf.fit(Xtr_s, y[tr])
        aucs.append(float(roc_auc_score(y[te], rf.predict_proba(Xte_s)[:, 1])))
        del Xtr, Xte, Xtr_s, Xte_s, rf
    q.put({"seconds": time.perf_counter() - t0, "load_s": load_s, "aucs": aucs, "peak_mb": _rss_mb(), "base_mb": base})


def _task_build(a: dict, q) -> None:
    import rasterio
    import shapely
    from affine import Affine

    from common.geo import Feature, write_gpkg
    from tabular.build import BuildTableConfig, build_table

    n = a["build_size"]
    work = Path(a["work"]) / "build"
    work.mkdir(exist_ok=True)
    crs, res, x0, y0 = "EPSG:32633", 10.0, 400_000.0, 5_200_000.0
    transform = Affine(res, 0, x0, 0, -res, y0)
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float32)
    paths = []
    for k in range(10):
        arr = (np.sin(rows / (50 + 7 * k)) + np.cos(cols / (70 + 5 * k)) + 0.1 * k).astype(np.float32)
        p = work / f"f{k}.tif"
        with rasterio.open(
            p,
            "w",
            driver="GTiff",
            width=n,
            height=n,
            count=1,
            dtype="float32",
            crs=crs,
            transform=transform,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
        ) as dst:
            dst.write(arr, 1)
        paths.append(str(p))
    polys = [
        Feature(shapely.Point(x0 + res * rng.uniform(0, n), y0 - res * rng.uniform(0, n)).buffer(60), {"id": i})
        for i in range(2000)
    ]
    write_gpkg(polys, work / "inv.gpkg", crs)
    base = _rss_mb()
    res_ = build_table(
        BuildTableConfig(rasters=paths, inventory=str(work / "inv.gpkg"), out=str(work / "table")), log=lambda s: None
    )
    q.put(
        {
            "cells": res_.height * res_.width,
            "rows": res_.rows,
            "seconds": res_.seconds,
            "cells_per_s": res_.cells_per_second,
            "peak_mb": _rss_mb(),
            "base_mb": base,
        }
    )
    shutil.rmtree(work, ignore_errors=True)


class _LoadQueue:
    """Wraps the result queue: every result gets the load average (1 min) at the task's start and end."""

    def __init__(self, queue) -> None:
        self.queue = queue
        self.load0 = os.getloadavg()[0]

    def put(self, d: dict) -> None:
        self.queue.put(d | {"load_start": self.load0, "load_end": os.getloadavg()[0]})


def _child(task: str, a: dict, queue) -> None:
    q = _LoadQueue(queue)
    if task == "train":
        _task_train(a, q)
    elif task == "score":
        _task_score(a, q, raster=False)
    elif task == "raster":
        _task_score(a, q, raster=True)
    elif task == "ours":
        _task_ours(a, q)
    elif task == "study":
        _task_study(a, q)
    elif task == "build":
        _task_build(a, q)
    else:
        raise ValueError(task)


def run_task(task: str, a: dict) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(task, a, q))
    p.start()
    while True:
        try:
            out = q.get(timeout=5)
            break
        except Exception:
            if not p.is_alive():
                raise RuntimeError(f"task {task} died with exit code {p.exitcode}") from None
    p.join()
    print(f"{task}: {json.dumps(out)}", flush=True)
    return out


def _write_subset(table: str, rows: int, out: Path) -> int:
    import pyarrow.parquet as pq

    from tabular.large.source import TableSource

    src = TableSource(table)
    out.mkdir(parents=True, exist_ok=True)
    done = 0
    with pq.ParquetWriter(out / "part-0.parquet", src.schema) as w:
        for batch in src.batches(src.columns):
            take = min(batch.num_rows, rows - done)
            w.write_batch(batch.slice(0, take) if take < batch.num_rows else batch)
            done += take
            if done >= rows:
                break
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--study-rows", type=int, default=1_000_000)
    ap.add_argument("--build-size", type=int, default=2000, help="side of the 10 build rasters, cells")
    ap.add_argument("--tasks", default="train,score,raster,ours,study,build")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-rows", type=int, default=262_144)
    ap.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help="boosting rounds of the train task (fewer: memory at scale, time per round)",
    )
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder beside --table)")
    a = ap.parse_args(argv)
    tasks = a.tasks.split(",")
    work = Path(a.work or tempfile.mkdtemp(prefix=".bench-", dir=Path(a.table).parent))
    work.mkdir(parents=True, exist_ok=True)
    args = {
        "table": a.table,
        "work": str(work),
        "threads": a.threads,
        "batch_rows": a.batch_rows,
        "build_size": a.build_size,
        "rounds": a.rounds,
    }
    res: dict[str, dict] = {}
    load = os.getloadavg()
    try:
        if {"ours", "study"} & set(tasks):
            sub = work / "study_table"
            n = _write_subset(a.table, a.study_rows, sub)
            args["study_table"] = str(sub)
            args["study_rows"] = n
        for t in tasks:
            res[t] = run_task(t, args)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(
        f"\n# susceptibility benchmark: {a.table}; {a.threads} threads; {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}; "
        f"load average {load[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print("| measurement | rows | time (s) | peak RSS (MB) | extra RSS (MB) | note |")
    print("|---|---|---|---|---|---|")
    if "train" in res:
        r = res["train"]
        print(
            f"| train: stream + bin + {r['rounds']} rounds x {LEAVES} leaves | {r['rows']:,} | {r['seconds']:.1f} | "
            f"{r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} | labels {r['plan_s']:.1f} s, binning "
            f"{r['bin_s']:.1f} s, boosting {r['train_s']:.1f} s ({r['seconds_per_round']:.2f} s/round); binned matrix "
            f"~{r['binned_mb']:.0f} MB; load {r['load_start']:.1f}-{r['load_end']:.1f}; target peak <= 8192 MB |"
        )
    for key, name in (
        ("score", "score Parquet -> Parquet, compiled"),
        ("raster", "score Parquet -> Parquet + GeoTIFFs + PNG"),
    ):
        if key in res:
            r = res[key]
            print(
                f"| {name} | {r['rows']:,} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} | "
                f"**{r['rows_per_s']:,.0f} rows/s** end to end (target >= 1,000,000); compiled predict alone "
                f"{r['predict_rows_per_s']:,.0f} rows/s; compile {r['compile_s']:.1f} s |"
            )
    if "build" in res:
        r = res["build"]
        print(
            f"| build_table, 10 rasters | {r['cells']:,} cells | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
            f"{r['peak_mb'] - r['base_mb']:.0f} | **{r['cells_per_s']:,.0f} cells/s** ({r['rows']:,} rows written) |"
        )
    if "study" in res and "ours" in res:  # (run separately, paste both lines' JSON into one table)
        s, o = res["study"], res["ours"]
        n = args["study_rows"]
        print(f"\n## study approach vs this pipeline, {n:,} rows, the same 3 spatial folds (1 km blocks)\n")
        print("| approach | time (s) | peak RSS (MB) | ROC-AUC per fold | mean ROC-AUC |")
        print("|---|---|---|---|---|")
        for name, r in (
            ("study: pandas + MinMax + RandomForest(16 trees, depth 16, balanced)", s),
            (f"this pipeline: streamed LightGBM ({ROUNDS} x {LEAVES} leaves)", o),
        ):
            print(
                f"| {name} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {', '.join(f'{v:.3f}' for v in r['aucs'])} | "
                f"{np.mean(r['aucs']):.3f} |"
            )
        print(
            f"| **ratio pipeline / study** | **{o['seconds'] / s['seconds']:.2f}** | **{o['peak_mb'] / s['peak_mb']:.2f}** | | "
            f"{np.mean(o['aucs']) - np.mean(s['aucs']):+.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
