"""Windowed scene prediction (``pipelines.predict_scene``) against the in-memory ``predict_scene``: wall time,
tiles/s and peak RSS, side by side, on synthetic Sentinel-2 L2A scenes written as COGs.

Each scene (``fusion.demo.synthetic_scene.write_synthetic_scene``: 12 bands at 10/20/60 m, SCL, a DEM in
EPSG:4326, i.e. another CRS than the scene's UTM) is ``size`` x ``size`` 10 m pixels (10980: a full tile),
cached in ``--workdir``. The model is the small RAU-Net (``small_rau_net1``, base width ``--width``, 40 by
default; random weights with the head set to a constant low probability, so the masks stay empty and the
time measured is reading, preprocessing, the network and writing, not vectorising noise) on the L2A band
set without B10 plus slope and DEM (13 bands, 22 channels).

Every measurement runs in a fresh subprocess, whose peak RSS (``ru_maxrss``) is reported:

* ``windowed``: ``imagery.inference.scene.run_scene`` (rows of tiles, COG/GeoJSON/GPKG/PNG outputs);
* ``in-memory``: the same inputs read whole (``(13, H, W)`` float32 in model units) and
  ``imagery.inference.predict.predict_scene`` (whole-scene accumulators), the pre-issue-9 path.

    python benchmarks/scene_bench.py --sizes 1098,2196 --baseline-sizes 1098,2196
    python benchmarks/scene_bench.py --sizes 10980x384 --baseline-sizes "" --width 8   # full tile width, 384 rows
    python benchmarks/scene_bench.py --sizes 10980 --baseline-sizes 2196 --device cuda --batch-size 64   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B11", "B12", "slope", "DEM"]


def make_model(folder: Path, width: int) -> Path:
    import numpy as np
    import torch
    from torch import nn

    from imagery.inference import SegmenterMeta, save_segmenter_files
    from imagery.models import create_model
    from imagery.transforms.features import channel_names

    ch = list(channel_names(23, BANDS))
    torch.manual_seed(0)
    kw = {"in_channels": len(ch), "num_classes": 2, "head": "multires", "base_width": width}
    model = create_model("small_rau_net1", **kw)
    for conv in [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 2]:
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.copy_(torch.tensor([0.0, float(np.log(1e-4))]))
    meta = SegmenterMeta("small_rau_net1", kw, 23, threshold=0.5, band_order=BANDS, head="multires", channels=ch)
    save_segmenter_files(model, meta, folder)
    return folder


def worker(mode: str, scene: Path, model: Path, out: Path, batch: int, device: str, runtime: str) -> dict:
    import numpy as np

    from imagery.data.sentinel2 import open_scene
    from imagery.inference.config import SceneConfig
    from imagery.inference.predict import predict_scene
    from imagery.inference.scene import _StripReader, plan_inputs, run_scene
    from imagery.inference.serving import load_segmenter

    cfg = SceneConfig(
        scene=str(scene),
        model_uri=str(model),
        out=str(out),
        dem=str(scene / "dem.tif"),
        batch_size=batch,
        device=device,
        runtime=runtime,
        progress=False,
    )
    t0 = time.perf_counter()
    if mode == "windowed":  # as pipelines.predict_scene: the model loaded and its engine chosen inside the run
        res = run_scene(cfg, log=lambda _: None)
        tiles = res.summary["tiles"]["predicted"]
        infer = res.summary["timings_s"]["infer_s"]
        busy = res.summary["model_busy"]["predict_share"]
        eng = res.summary.get("engine", {})
        extra = {
            "engine": f"{eng.get('path')} ({eng.get('source')})",
            "gflops": eng.get("gflops"),
            "skipped_share": res.summary.get("skipped_share"),
            "tiles_skipped": res.summary["tiles"].get("skipped"),
        }
    else:
        seg = load_segmenter(str(model), device=device, runtime=runtime)
        inp = plan_inputs(open_scene(scene), seg, cfg, lambda _: None)
        with _StripReader(inp, cfg) as reader:
            raw, reason, _ = reader.read(0, inp.grid.height)
        t1 = time.perf_counter()
        calls = []

        def fn(b: np.ndarray) -> np.ndarray:
            calls.append(len(b))
            return seg.predict(b, batch_size=len(b))["prob"]

        prob = predict_scene(fn, raw, tile=cfg.tile, overlap=cfg.overlap, batch_size=batch)
        prob[reason > 0] = np.nan
        tiles, infer = sum(calls), time.perf_counter() - t1
        busy = None
        extra = {"engine": runtime}
    wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "wall_s": wall,
        "tiles": tiles,
        "tiles_per_s": tiles / infer,
        "peak_rss_mb": rss_mb,
        "model_busy": busy,
        **extra,
    }


def run_worker(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        default="1098,2196",
        help="windowed run sizes: 10 m px per side, or WIDTHxHEIGHT for a strip (multiples of 6)",
    )
    p.add_argument("--baseline-sizes", default="1098,2196", help="in-memory run sizes")
    p.add_argument("--width", type=int, default=40, help="small_rau_net1 base width (40 = the small model)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--runtime",
        default="auto",
        help="inference path: auto (the commands' default: measured per machine), torch (fp32 eager), torch:bf16, onnx",
    )
    p.add_argument("--workdir", default="/tmp/scene_bench")
    p.add_argument("--worker", nargs=7, metavar=("MODE", "SCENE", "MODEL", "OUT", "BATCH", "DEVICE", "RUNTIME"))
    args = p.parse_args()
    if args.worker:
        mode, scene, model, out, batch, device, runtime = args.worker
        print(json.dumps(worker(mode, Path(scene), Path(model), Path(out), int(batch), device, runtime)))
        return
    from fusion.demo.synthetic_scene import write_synthetic_scene

    work = Path(args.workdir)
    model = work / f"model_w{args.width}"
    if not (model / "model_meta.json").exists():
        make_model(model, args.width)
    sizes = sorted(
        {s for s in args.sizes.split(",") if s} | {s for s in args.baseline_sizes.split(",") if s},
        key=lambda s: [int(v) for v in s.split("x")],
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(f"model: small_rau_net1 width {args.width}, {len(BANDS)} bands, batch {args.batch_size}, {args.device}")
    print(
        "| size (px) | path | engine | wall (s) | tiles | tiles/s | network GFLOP/s | skipped by rule "
        "| peak RSS (MB) | model busy (share of the tile loop) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        scene = work / f"scene_{size}"
        width, _, height = size.partition("x")
        if not (scene / "scene.json").exists():
            t0 = time.perf_counter()
            write_synthetic_scene(scene, int(width), height=int(height or width), cloud_fraction=0.1)
            print(f"(wrote the {size} px scene in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        for mode, wanted in (("windowed", args.sizes), ("in-memory", args.baseline_sizes)):
            if size not in wanted.split(","):
                continue
            r = run_worker(
                [
                    mode,
                    str(scene),
                    str(model),
                    str(work / f"out_{size}_{mode}"),
                    str(args.batch_size),
                    args.device,
                    args.runtime,
                ]
            )
            gflops = f"{r['gflops']:.1f}" if r.get("gflops") else "-"
            skipped = (
                f"{r['skipped_share']:.1%} ({r['tiles_skipped']} tiles)" if r.get("skipped_share") is not None else "-"
            )
            print(
                f"| {size} | {mode} | {r['engine']} | {r['wall_s']:.1f} | {r['tiles']} | {r['tiles_per_s']:.2f} | "
                f"{gflops} | {skipped} | {r['peak_rss_mb']:.0f} | "
                f"{r['model_busy'] if r['model_busy'] is not None else '-'} |",
                flush=True,
            )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
