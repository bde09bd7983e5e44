"""CPU inference of the segmenter: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, side by side.

For each model (small RAU-Net 1 and RAU-Net 1 by default, 23 channels, multi-resolution head, 128 px)
the network alone is timed on the same preprocessed batch, each runtime in its own fresh process so
that its peak resident memory (``ru_maxrss``) is its own:

* **torch eager** (the baseline): the project's fast path, channels-last, ``torch.inference_mode``;
* **ORT fp32**: the same network exported by ``imagery.inference.onnx.export_onnx``;
* **ORT int8**: statically quantized (QDQ, per-channel int8 weights, calibrated on 16 synthetic patches).

Prints images/s, the ratio to torch eager (target: ORT fp32 >= 1.5x for the small model) and peak RSS.
Preprocessing (identical for all three, in Python) is not part of the timing.

Usage::

    python benchmarks/onnx_bench.py [--models small_rau_net1 rau_net1] [--batch 16] [--iters 3] [--threads 0]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _worker(kind: str, model_name: str, onnx_path: str, batch: int, iters: int, threads: int, queue: mp.Queue) -> None:
    import numpy as np
    import torch

    from imagery.inference.onnx import OnnxNetwork
    from imagery.models import create_model

    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(batch, 23, 128, 128)).astype(np.float32))
    if kind == "torch":
        torch.manual_seed(0)
        net = create_model(model_name, in_channels=23, head="multires").eval().to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)

        def run() -> None:
            with torch.inference_mode():
                net(xc)
    else:
        net = OnnxNetwork(onnx_path, threads)

        def run() -> None:
            net(x)

    run()  # warm-up
    t0 = time.perf_counter()
    for _ in range(iters):
        run()
    seconds = (time.perf_counter() - t0) / iters
    queue.put({"img_s": batch / seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _export(model_name: str, folder: Path) -> dict[str, str]:
    import torch

    from imagery.inference import SegmenterMeta
    from imagery.inference.onnx import export_onnx
    from imagery.models import create_model

    torch.manual_seed(0)
    kw = {"in_channels": 23, "num_classes": 2, "head": "multires"}
    net = create_model(model_name, **kw)
    meta = SegmenterMeta(model_name, kw, 23, head="multires")
    return {
        "fp32": str(export_onnx(net, meta, folder / f"{model_name}.onnx")),
        "int8": str(export_onnx(net, meta, folder / f"{model_name}_int8.onnx", int8=True)),
    }


def measure(kind: str, model_name: str, path: str, args: argparse.Namespace) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(kind, model_name, path, args.batch, args.iters, args.threads, queue))
    proc.start()
    result = queue.get(timeout=3600)
    proc.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["small_rau_net1", "rau_net1"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for all runtimes (0: their default)")
    args = p.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"load average {os.getloadavg()[0]:.2f}; batch {args.batch} x 23 x 128 x 128, {args.iters} iterations"
    )
    print("| model | runtime | img/s | ratio to torch eager | peak RSS MB |")
    print("|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            paths = _export(name, Path(tmp))
            base = measure("torch", name, "", args)
            for kind, path in (("torch eager", ""), ("ORT fp32", paths["fp32"]), ("ORT int8", paths["int8"])):
                r = base if kind == "torch eager" else measure("onnx", name, path, args)
                ratio = r["img_s"] / base["img_s"]
                print(f"| {name} | {kind} | {r['img_s']:.2f} | {ratio:.2f}x | {r['peak_mb']:.0f} |", flush=True)
                rows.append({"model": name, "runtime": kind, **r, "ratio": ratio})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
