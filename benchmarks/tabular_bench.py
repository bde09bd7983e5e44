"""Benchmark the tabular pipeline's LightGBM against scikit-learn's HistGradientBoostingClassifier.

``python benchmarks/tabular_bench.py [--rows 1000000] [--features 40] [--shap-rows 100000] [--only-predict]``

Synthetic data: ``rows`` x ``features`` float64, label from a noisy logistic model with
interactions. Settings are matched: the same rounds, leaves, learning rate, min leaf size, bins,
no L2, no bagging/feature subsampling, no class weight, no early stopping. Each measurement runs in
its own child process (spawn) so its peak RSS (``resource.getrusage``, which, unlike tracemalloc,
sees LightGBM's and OpenMP's C allocations) is its own; "extra" is peak RSS minus the RSS after
imports and loading the data (memory-mapped .npy).

Prediction is measured twice on the same fitted model: ``predict_proba`` through LightGBM's Booster,
and after ``LandslideClassifier.compile()`` (lleaves/LLVM native code; compile time reported on its
own row, then rows/s on all rows, checked equal to the Booster's probabilities to 1e-9).
``--only-predict`` fits the LightGBM model and measures only the two prediction rows (skips the
HistGradientBoosting fit and SHAP, the slow parts).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def make_data(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``X (rows, features)`` float64 and ``y (rows,)`` int64 with ~30 % positives."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features))
    w = rng.normal(0, 1, features) * (rng.uniform(size=features) < 0.5)
    logit = X @ w * 0.5 + 0.8 * X[:, 0] * X[:, 1] - 0.6 * np.abs(X[:, 2]) + rng.normal(0, 1, rows) - 1.0
    y = (logit > 0).astype(np.int64)
    return X, y


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _child(task: str, data_dir: str, args: dict, queue: mp.Queue) -> None:
    import pandas as pd

    X = np.load(Path(data_dir) / "X.npy", mmap_mode="r")
    y = np.load(Path(data_dir) / "y.npy")
    names = [f"f{i}" for i in range(X.shape[1])]
    if task == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits

        Xa = np.asarray(X)
        base = _rss_mb()
        clf = HistGradientBoostingClassifier(
            max_iter=args["rounds"],
            max_leaf_nodes=args["leaves"],
            learning_rate=args["lr"],
            min_samples_leaf=20,
            l2_regularization=0.0,
            max_bins=255,
            early_stopping=False,
            random_state=0,
        )
        t = time.perf_counter()
        with threadpool_limits(args["threads"]):  # the same OpenMP thread count as LightGBM
            clf.fit(Xa, y)
        queue.put({"task": task, "seconds": time.perf_counter() - t, "peak_mb": _rss_mb(), "base_mb": base})
        return
    from tabular.config import LGBMParams
    from tabular.model import LandslideClassifier

    params = LGBMParams(
        learning_rate=args["lr"],
        num_leaves=args["leaves"],
        min_data_in_leaf=20,
        feature_fraction=1.0,
        bagging_fraction=1.0,
        bagging_freq=0,
        lambda_l2=0.0,
        max_bin=255,
        early_stopping_rounds=0,
        class_balance="none",
        num_threads=args["threads"],
    )
    df = pd.DataFrame(np.asarray(X), columns=names, copy=False)
    base = _rss_mb()
    model_file = Path(data_dir) / "model.lgb"
    if task == "lgbm":
        clf = LandslideClassifier(params, seed=0, categorical=[])
        t = time.perf_counter()
        clf.fit(df, y, num_boost_round=args["rounds"])
        fit_s = time.perf_counter() - t
        clf.booster_.save_model(str(model_file))
        (Path(data_dir) / "meta.json").write_text(json.dumps(clf.metadata()))
        queue.put({"task": task, "seconds": fit_s, "peak_mb": _rss_mb(), "base_mb": base})
        return
    import lightgbm as lgb

    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    clf = LandslideClassifier.from_booster(lgb.Booster(model_file=str(model_file)), meta)
    clf.params = params
    if task == "predict":
        clf.predict_proba(df.iloc[:1000])
        t = time.perf_counter()
        clf.predict_proba(df)
        s = time.perf_counter() - t
        queue.put({"task": task, "seconds": s, "rows_per_s": len(df) / s, "peak_mb": _rss_mb(), "base_mb": base})
        return
    if task == "compiled":
        ref = clf.predict_proba(df)[:, 1]
        t = time.perf_counter()
        clf.compile(num_threads=args["threads"])
        compile_s = time.perf_counter() - t
        clf.predict_proba(df.iloc[:1000])
        t = time.perf_counter()
        p = clf.predict_proba(df)[:, 1]
        s = time.perf_counter() - t
        queue.put(
            {
                "task": task,
                "seconds": s,
                "compile_seconds": compile_s,
                "rows_per_s": len(df) / s,
                "max_abs_diff": float(np.max(np.abs(p - ref))),
                "peak_mb": _rss_mb(),
                "base_mb": base,
            }
        )
        return
    if task == "shap":
        import warnings

        from tabular.explain import shap_values

        sub = df.iloc[: args["shap_rows"]]
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shap_values(clf, sub)
        s_shap = time.perf_counter() - t
        t = time.perf_counter()
        clf.contributions(sub)
        s_contrib = time.perf_counter() - t
        queue.put(
            {"task": task, "seconds": s_shap, "contrib_seconds": s_contrib, "peak_mb": _rss_mb(), "base_mb": base}
        )
        return
    raise ValueError(f"unknown task {task!r}")


def run_task(task: str, data_dir: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(task, data_dir, args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=40)
    ap.add_argument("--shap-rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OpenMP threads for both libraries")
    ap.add_argument(
        "--only-predict", action="store_true", help="fit LightGBM, then measure prediction only (no HGB fit, no SHAP)"
    )
    a = ap.parse_args(argv)
    args = {
        "rounds": a.rounds,
        "leaves": a.leaves,
        "lr": a.lr,
        "shap_rows": min(a.shap_rows, a.rows),
        "threads": a.threads,
    }
    with tempfile.TemporaryDirectory() as tmp:
        X, y = make_data(a.rows, a.features, a.seed)
        np.save(Path(tmp) / "X.npy", X)
        np.save(Path(tmp) / "y.npy", y)
        del X
        tasks = ("lgbm", "predict", "compiled") if a.only_predict else ("lgbm", "hgb", "shap", "predict", "compiled")
        res = {t: run_task(t, tmp, args) for t in tasks}
    cpu = platform.processor() or platform.machine()
    print(
        f"# tabular benchmark: {a.rows} rows x {a.features} features, {a.rounds} rounds, {a.leaves} leaves, "
        f"lr {a.lr}, {a.threads} threads each; {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"
    )
    print("| measurement | time (s) | peak RSS (MB) | extra RSS (MB) | note |")
    print("|---|---|---|---|---|")
    for name, key in (("LightGBM fit (LandslideClassifier)", "lgbm"), ("HistGradientBoosting fit", "hgb")):
        if key not in res:
            continue
        r = res[key]
        print(f"| {name} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} | |")
    if "hgb" in res:
        ratio = res["lgbm"]["seconds"] / res["hgb"]["seconds"]
        print(f"| fit time ratio LightGBM / HGB | {ratio:.2f} | | | target <= 0.8 |")
    if "shap" in res:
        s = res["shap"]
        print(
            f"| SHAP TreeExplainer, {args['shap_rows']} rows | {s['seconds']:.1f} | {s['peak_mb']:.0f} | {s['peak_mb'] - s['base_mb']:.0f} | |"
        )
        print(f"| LightGBM pred_contrib, {args['shap_rows']} rows | {s['contrib_seconds']:.1f} | | | |")
    pr = res["predict"]
    print(
        f"| predict_proba, {a.rows} rows | {pr['seconds']:.2f} | {pr['peak_mb']:.0f} | {pr['peak_mb'] - pr['base_mb']:.0f} | {pr['rows_per_s']:,.0f} rows/s (target >= 500,000) |"
    )
    c = res["compiled"]
    print(f"| compile (lleaves), {a.rounds} trees | {c['compile_seconds']:.2f} | | | one-off |")
    print(
        f"| compiled predict_proba, {a.rows} rows | {c['seconds']:.2f} | {c['peak_mb']:.0f} | {c['peak_mb'] - c['base_mb']:.0f} | "
        f"{c['rows_per_s']:,.0f} rows/s (target >= 500,000); max |p - Booster p| = {c['max_abs_diff']:.1e} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
