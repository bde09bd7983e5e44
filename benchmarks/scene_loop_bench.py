"""The tile loop of ``predict_scene`` with and without its CPU overlap settings, side by side.

Crops the first ``--rows`` rows (a multiple of 60, so that the 20 m and 60 m bands crop on whole pixels) of a
cached synthetic scene (``scene_bench.py``'s ``--workdir``: 12 bands at 10/20/60 m, SCL, a DEM in EPSG:4326)
into a temporary scene of the same width, then runs the product's ``run_scene`` on it in a fresh process per
run, alternating the variants (best of ``--repeats``):

* ``before``: the reader thread at the process's priority and each batch preprocessed in one thread;
* ``nice``: the reader thread at a lower priority (``common.threads.lower_this_thread``) only;
* ``split``: the batch's preprocessing split over torch's threads (``imagery.transforms.preprocess``) only;
* ``product``: both (the product's default);
* ``plain``: the product with the engine's torch paths on the model as trained instead of its inference copy
  (``imagery.models.inference.for_inference``: BatchNorm folded, padding inside the convolutions);
* ``stream``: the product with each batch run as one (``--lanes 1``) instead of split over one-core lanes
  (``imagery.inference.lanes``).

Prints wall seconds, the network's patches/s inside the loop, the preprocessing seconds (``predict_s`` minus
the network's), the reader thread's seconds and each variant's ratio to ``before``.

    python benchmarks/scene_loop_bench.py --scene /work/bench/scene/scene_10980 --model /work/bench/scene/model_w8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("before", "nice", "split", "product", "plain", "stream")


def crop_scene(scene: Path, rows: int, out: Path) -> Path:
    """The first ``rows`` rows of ``scene`` (each band at its own resolution, tiled and compressed as the
    source) in ``out``; the DEM is linked (it is warped onto the scene's grid)."""
    import rasterio
    from rasterio.windows import Window

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(scene / "scene.json", out / "scene.json")
    (out / "dem.tif").symlink_to(scene / "dem.tif")
    for tif in sorted(scene.glob("*.tif")):
        if tif.name == "dem.tif":
            continue
        with rasterio.open(tif) as src:
            factor = round(src.res[1] / 10.0)
            win = Window(0, 0, src.width, rows // factor)
            profile = src.profile
            profile.update(height=int(win.height), transform=src.window_transform(win))
            with rasterio.open(out / tif.name, "w", **profile) as dst:
                dst.write(src.read(window=win))
    return out


def worker(variant: str, scene: str, model: str, out: str) -> dict:
    import imagery.inference.scene as scene_mod
    import imagery.transforms.preprocess as pre_mod
    from imagery.inference.config import SceneConfig

    if variant in ("before", "split"):
        scene_mod.lower_this_thread = lambda *a, **k: False  # type: ignore[assignment]
    if variant in ("before", "nice"):
        pre_mod._split = lambda arr, parts: [arr]  # type: ignore[assignment]
    if variant == "plain":
        import copy

        import imagery.inference.engine as engine_mod

        engine_mod.for_inference = lambda model: copy.deepcopy(model).eval()  # type: ignore[assignment]
    lanes = 1 if variant in ("before", "nice", "split", "stream") else 0  # lanes came after the first three
    cfg = SceneConfig(
        scene=scene, model_uri=model, out=out, dem=str(Path(scene) / "dem.tif"), progress=False, lanes=lanes
    )
    t0 = time.perf_counter()
    res = scene_mod.run_scene(cfg, log=lambda _: None)
    wall = time.perf_counter() - t0
    s = res.summary
    eng = s.get("engine", {})
    return {
        "wall_s": wall,
        "patches_per_s": eng.get("patches_per_s"),
        "preprocess_s": s["timings_s"]["predict_s"] - (eng.get("seconds") or 0.0),
        "read_s": s["timings_s"]["read_s"],
        "tiles": s["tiles"]["predicted"],
        "lanes": s.get("lanes"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scene", help="a scene folder written by scene_bench.py (with dem.tif)")
    p.add_argument("--model", help="a model folder written by scene_bench.py")
    p.add_argument("--rows", type=int, default=2040, help="rows of the scene run (a multiple of 60; default 2040)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--worker", nargs=4, metavar=("VARIANT", "SCENE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    if not args.scene or not args.model:
        p.error("--scene and --model are required")
    if args.rows % 60:
        p.error(f"--rows must be a multiple of 60, got {args.rows}")
    variants = args.variants.split(",")
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="scene-loop-") as tmp:
        scene = crop_scene(Path(args.scene), args.rows, Path(tmp) / "scene")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for _ in range(args.repeats):
            for v in variants:
                out = Path(tmp) / f"out_{v}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, __file__, "--worker", v, str(scene), args.model, str(out)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr[-2000:])
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                if v not in best or r["wall_s"] < best[v]["wall_s"]:
                    best[v] = r
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load {os.getloadavg()}")
    print(
        f"scene {Path(args.scene).name}, first {args.rows} rows, model {Path(args.model).name}, best of {args.repeats}"
    )
    base = "before" if "before" in best else variants[0]  # the baseline: before, else the first variant named
    print(f"| variant | wall (s) | vs {base} | network patches/s | preprocessing s | reader thread s | lanes | tiles |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in variants:
        r = best[v]
        ratio = f"{best[base]['wall_s'] / r['wall_s']:.2f}x"
        print(
            f"| {v} | {r['wall_s']:.1f} | {ratio} | {r['patches_per_s']:.1f} | {r['preprocess_s']:.1f} | "
            f"{r['read_s']:.1f} | {r['lanes']} | {r['tiles']} |"
        )


if __name__ == "__main__":
    main()
