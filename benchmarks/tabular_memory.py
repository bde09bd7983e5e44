"""Where the large-table training's memory goes, stage by stage (issue 22, "Memory at the study's scale").

Runs the default local training (``tabular.large``; the settings of ``train_tabular --target slide
--drop x,y --cv spatial --block-size 1000 --folds 2``, default early stopping) on a table written by
``python -m pipelines.make_table --like carinthia --rows N``, and prints per stage the resident memory at
its end and its peak (Linux ``VmRSS``/``VmHWM``; the peak is reset at each stage boundary by writing 5 to
``/proc/self/clear_refs``), and the peak of Python/NumPy allocations (``tracemalloc``; the difference to
RSS is LightGBM's C++ memory and the interpreter). Stages: planning (labels, folds), binning, each fold's
training, the out-of-fold pass, the CV report, the refit, the model's logging and SHAP.

Usage::

    python -m pipelines.make_table --like carinthia --rows 2000000 --out /tmp/t2m --seed 0
    python benchmarks/tabular_memory.py --data /tmp/t2m [--max-rounds N] [--early-stopping N] [--no-tracemalloc]

Run it at two sizes and extrapolate per stage: ``peak(n) = a + b * n`` from the two measurements
(``b`` in bytes per row), which is how ``benchmarks/RESULTS.md`` states the 57.8M-row peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _status_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    vals = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, v = line.split(":", 1)
            vals[key] = int(v.split()[0]) / 1024
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class Stages:
    """Marks stage boundaries; records each stage's end RSS, peak RSS and peak traced allocations."""

    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.rows: list[dict[str, Any]] = []
        self.name = "start"
        self.t0 = time.perf_counter()
        _reset_peak()
        if trace:
            tracemalloc.start()

    def mark(self, next_name: str) -> None:
        rss, hwm = _status_mb()
        traced = tracemalloc.get_traced_memory() if self.trace else (0, 0)
        now = time.perf_counter()
        self.rows.append(
            {
                "stage": self.name,
                "seconds": round(now - self.t0, 1),
                "rss_end_mb": round(rss),
                "rss_peak_mb": round(hwm),
                "py_now_mb": round(traced[0] / 2**20),
                "py_peak_mb": round(traced[1] / 2**20),
            }
        )
        print(json.dumps(self.rows[-1]), flush=True)
        self.name, self.t0 = next_name, now
        _reset_peak()
        if self.trace:
            tracemalloc.reset_peak()


def _wrap(module: Any, attr: str, stages: Stages, label: str) -> None:
    fn: Callable[..., Any] = getattr(module, attr)

    def wrapped(*a: Any, **k: Any) -> Any:
        stages.mark(label)
        out = fn(*a, **k)
        stages.mark(f"after {label}")
        return out

    setattr(module, attr, wrapped)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a table from pipelines.make_table --like carinthia")
    p.add_argument("--max-rounds", type=int, default=None, help="default: LGBMParams' default")
    p.add_argument("--early-stopping", type=int, default=None, help="default: LGBMParams' default")
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--no-tracemalloc", action="store_true", help="RSS only (tracemalloc slows NumPy-heavy stages)")
    args = p.parse_args()

    import dataclasses

    from common.tracking import setup_tracking, tracked_run
    from tabular import large
    from tabular.config import CVConfig, LGBMParams, TrainTabularConfig
    from tabular.large import core, local

    lg = LGBMParams()
    if args.max_rounds is not None:
        lg = dataclasses.replace(lg, num_boost_round=args.max_rounds)
    if args.early_stopping is not None:
        lg = dataclasses.replace(lg, early_stopping_rounds=args.early_stopping)
    print(f"load average at the start: {os.getloadavg()}; settings: rounds {lg.num_boost_round}, ", end="")
    print(f"early stopping {lg.early_stopping_rounds}, {args.folds} spatial folds of 1000 m blocks", flush=True)
    stages = Stages(trace=not args.no_tracemalloc)
    for attr, label in (("predict_folds", "out-of-fold pass"), ("log_cv_results", "CV report")):
        _wrap(local, attr, stages, label)
    _wrap(local, "finish_training", stages, "model logging + SHAP")
    _wrap(local, "build_binned_dataset", stages, "binning")
    original_fit = core.fit_on_positions
    count = {"n": 0}

    def fit(*a: Any, **k: Any) -> Any:
        count["n"] += 1
        label = f"fit {count['n']} ({'fold' if k.get('early_stopping') else 'refit'})"
        stages.mark(label)
        out = original_fit(*a, **k)
        stages.mark(f"after {label}")
        return out

    local.fit_on_positions = fit
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainTabularConfig(
            data=args.data,
            target="slide",
            drop=["x", "y"],
            seed=0,
            experiment="tabular_memory",
            tracking_uri=f"sqlite:///{tmp}/mlflow.db",
            cv=CVConfig(n_folds=args.folds, mode="spatial", block_size_m=1000),
            lgbm=lg,
        )
        setup_tracking(cfg.tracking_uri)
        t0 = time.perf_counter()
        with tracked_run(cfg.experiment, cfg):
            large.train(cfg, log=lambda m: print(f"  [{time.perf_counter() - t0:6.0f} s] {m}", flush=True))
        stages.mark("end")
    peak = max(r["rss_peak_mb"] for r in stages.rows)
    worst = max(stages.rows, key=lambda r: r["rss_peak_mb"])
    print(f"peak RSS {peak} MB in stage {worst['stage']!r}; wall {time.perf_counter() - t0:.0f} s")
    print(f"load average at the end: {os.getloadavg()}")
    print("| stage | seconds | RSS at end (MB) | peak RSS (MB) | Python/NumPy now (MB) | Python/NumPy peak (MB) |")
    print("|---|---|---|---|---|---|")
    for r in stages.rows:
        print(
            f"| {r['stage']} | {r['seconds']} | {r['rss_end_mb']} | {r['rss_peak_mb']} | {r['py_now_mb']} | "
            f"{r['py_peak_mb']} |"
        )


if __name__ == "__main__":
    main()
