"""Inference paths side by side: each candidate of ``imagery.inference.engine`` on the same inputs, one run.

For each model (the width-8 small RAU-Net 1, the small RAU-Net 1, optionally RAU-Net 1; 23 channels,
multi-resolution head, 128 px, random weights with seed 0) the engine's own measurement runs with every
candidate (torch fp32 eager, torch bf16 autocast + channels-last where the CPU has bf16, ONNX Runtime fp32
and int8; ``--compile`` adds ``torch.compile``, rejected with the reason where no C++ compiler is found) and nothing cached: the same batch, the candidates interleaved
(best of ``--rounds``), each checked against fp32 on the reference batch. Printed per path: patches/s,
GFLOP/s (FLOPs from ``torch.utils.flop_counter``) and its share of the measured matmul peak of the path's
dtype, the ratio to fp32 eager, the parity numbers (largest, 99.9th-percentile and mean probability
difference with the path's bound; mask F1 agreement; landslide F1 against the reference masks beside
fp32's), the first call's seconds (the compile, for ``torch.compile``), and which
path the engine keeps. Also printed: this machine's measured matmul peak per dtype (fp32, bf16, int8 where
torch has an int8 CPU matmul) and the model-only time of a full 10,980 x 10,980 tile (tile 128, overlap 32)
at each path's throughput (an estimate from throughput: no tile is run).

Usage::

    python benchmarks/inference_engines.py [--models w8 small rau1] [--batch 8] [--rounds 2] [--compile]
        [--paths torch-fp32,torch-bf16] [--time-rejected]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from imagery.device import cpu_flags, cpu_has_bf16, cpu_model_name  # noqa: E402
from imagery.inference import (  # noqa: E402
    Segmenter,
    SegmenterMeta,
    engine,  # noqa: E402
)
from imagery.inference.predict import tile_starts  # noqa: E402
from imagery.models import create_model  # noqa: E402

MODELS = {
    "w8": ("small_rau_net1", {"base_width": 8}),
    "small": ("small_rau_net1", {}),
    "rau1": ("rau_net1", {}),
}
TILE_PX = 10980


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 5) -> float | None:
    """GFLOP/s of an ``n x n`` matmul in ``dtype`` (best of ``reps``); int8 through ``torch._int_mm``."""
    try:
        if dtype == torch.int8:
            a = torch.randint(-64, 64, (n, n), dtype=torch.int8)
            b = torch.randint(-64, 64, (n, n), dtype=torch.int8)

            def op() -> torch.Tensor:
                return torch._int_mm(a, b)
        else:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)

            def op() -> torch.Tensor:
                return a @ b

        op()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            op()
            best = min(best, time.perf_counter() - t0)
        return 2 * n**3 / best / 1e9
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


def tile_patches(tile: int = 128, overlap: int = 32) -> int:
    return len(tile_starts(TILE_PX, tile, overlap)) ** 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["w8", "small"], choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=8, help="patches per timed batch")
    p.add_argument("--rounds", type=int, default=2, help="timed batches per path (best kept)")
    p.add_argument("--reference", type=int, default=8, help="patches of the parity check")
    p.add_argument("--compile", action="store_true", help="add torch.compile (minutes of compiling on 2 cores)")
    p.add_argument("--paths", default=None, help="comma-separated paths to compare (default: all this CPU has)")
    p.add_argument("--time-rejected", action="store_true", help="time the paths that fail parity too")
    args = p.parse_args()
    load = os.getloadavg()
    flags = cpu_flags()
    print(
        f"machine: {cpu_model_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
        f"flags {' '.join(flags) or 'unknown'}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    peaks = {name: matmul_peak(dt) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    peaks["int8"] = matmul_peak(torch.int8)
    print(
        "matmul peak (1024^3, best of 5): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" if v else f"{k} n/a" for k, v in peaks.items())
    )
    n_tile = tile_patches()
    print(f"full tile {TILE_PX} x {TILE_PX} at tile 128 / overlap 32: {n_tile} patches")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[engine.CACHE_ENV] = tmp  # fresh exports, nothing cached
        os.environ.pop(engine.CANDIDATES_ENV, None)
        if args.paths:
            os.environ[engine.CANDIDATES_ENV] = args.paths
        if args.compile:
            os.environ[engine.COMPILE_ENV] = "1"
        print(
            "| model | GFLOP/patch | path | patches/s | GFLOP/s | % of dtype peak | vs fp32 eager | max dp (bound) "
            "| p99.9 dp | mean dp | mask F1 | label F1 (fp32) | first call s | kept |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for key in args.models:
            name, extra = MODELS[key]
            kw = {"in_channels": 23, "num_classes": 2, "head": "multires", **extra}
            torch.manual_seed(0)
            seg = Segmenter(create_model(name, **kw), SegmenterMeta(name, kw, 23, head="multires"), "cpu")
            t0 = time.perf_counter()
            choice = engine.choose_engine(
                seg,
                batch=args.batch,
                rounds=args.rounds,
                use_cache=False,
                reference=args.reference,
                time_rejected=args.time_rejected,
            )
            took = time.perf_counter() - t0
            base = choice.candidates.get("torch-fp32", {}).get("patches_per_s")
            for path, r in choice.candidates.items():
                rate = r.get("patches_per_s")
                ratio = f"{rate / base:.2f}x" if rate and base else "-"
                kept = "**kept**" if path == choice.path else ("rejected: " + r["reason"] if "reason" in r else "")
                bf16 = "bf16" in path or (path == "torch-compile" and cpu_has_bf16())  # compiles the bf16 copy
                peak = peaks.get("int8" if "int8" in path else "bf16" if bf16 else "fp32")
                share = f"{100 * r['gflops'] / peak:.0f}%" if r.get("gflops") and peak else "-"
                nan = float("nan")
                print(
                    f"| {key} ({name}) | {choice.gflop_per_patch:.1f} | {path} | {rate or 0:.2f} | "
                    f"{r.get('gflops') or 0:.1f} | {share} | {ratio} | {r.get('max_prob_diff', nan):.4f} "
                    f"({r.get('max_allowed', nan):g}) | {r.get('p999_prob_diff', nan):.4f} | "
                    f"{r.get('mean_prob_diff', nan):.5f} | {r.get('f1_agreement', nan):.4f} | "
                    f"{r.get('f1_labels', nan):.3f} ({r.get('f1_labels_reference', nan):.3f}) | "
                    f"{r.get('first_call_s', nan):.1f} | {kept} |",
                    flush=True,
                )
                tile_min = n_tile / rate / 60 if rate else None
                rows.append({"model": key, "path": path, **r, "tile_model_min": tile_min})
            kept = choice.candidates[choice.path]["patches_per_s"]
            print(
                f"  {key}: engine choice {choice.path} (measured in {took:.0f} s); full tile, model only: "
                f"fp32 eager {n_tile / base / 60:.1f} min, {choice.path} {n_tile / kept / 60:.1f} min",
                flush=True,
            )
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(json.dumps({"peaks": peaks, "rows": rows}, default=str))


if __name__ == "__main__":
    main()
