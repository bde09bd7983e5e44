"""``Segmenter.predict`` in one stream vs split over one-core CPU lanes (``imagery.inference.lanes``), side by side.

For each model (``--models``: the width-8 small RAU-Net 1, the small RAU-Net 1; 23 channels, 128 px, random
weights with seed 0) the engine chooses its path as the commands do (``apply_engine(..., "auto")``, from its cache
when measured before), then ``Segmenter.predict`` runs the same ``--patches`` synthetic L4S patches (raw bands:
cleaning, engineered channels and the network) at ``--batch-size`` with ``lanes = 1`` and with ``lanes = N`` (one
per torch thread), interleaved, best of ``--rounds``. Printed: patches/s of each, the ratio, and the largest
probability difference between the two.

    python benchmarks/lanes_bench.py [--models w8 small] [--patches 64] [--batch-size 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from imagery.data.synthetic import synth_patch  # noqa: E402
from imagery.device import cpu_model_name  # noqa: E402
from imagery.inference import Segmenter, SegmenterMeta, engine  # noqa: E402
from imagery.inference.lanes import lane_count  # noqa: E402
from imagery.models import create_model  # noqa: E402

MODELS = {"w8": {"base_width": 8}, "small": {}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["w8", "small"], choices=sorted(MODELS))
    p.add_argument("--patches", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    raw = np.stack([synth_patch(rng, has_landslide=i % 2 == 0)[0] for i in range(args.patches)])
    print(
        f"machine: {cpu_model_name() or platform.processor()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}; load at start {os.getloadavg()}"
    )
    print(f"{args.patches} patches, batch {args.batch_size}, best of {args.rounds}")
    print("| model | engine path | lanes | one stream (patches/s) | in lanes (patches/s) | ratio | max prob diff |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key in args.models:
        torch.manual_seed(0)
        kw = {"in_channels": 23, "num_classes": 2, "head": "multires", **MODELS[key]}
        seg = Segmenter(create_model("small_rau_net1", **kw), SegmenterMeta("small_rau_net1", kw, 23), "cpu")
        seg = engine.apply_engine(seg, "auto")
        n = lane_count(seg)
        best = {1: float("inf"), n: float("inf")}
        probs = {}
        for lanes in (1, n):  # warm-up (the lane threads start here)
            seg.lanes = lanes
            probs[lanes] = seg.predict(raw, batch_size=args.batch_size)["prob"]
        for _ in range(args.rounds):
            for lanes in (1, n):
                seg.lanes = lanes
                t0 = time.perf_counter()
                seg.predict(raw, batch_size=args.batch_size)
                best[lanes] = min(best[lanes], time.perf_counter() - t0)
        one, split = args.patches / best[1], args.patches / best[n]
        diff = float(np.abs(probs[n] - probs[1]).max())
        print(f"| {key} | {seg.engine.path} | {n} | {one:.1f} | {split:.1f} | {split / one:.2f}x | {diff:.1e} |")
    print(f"load at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
