"""Reading a scene as ``predict_scene`` does, with and without ``RasterOnGrid``'s direct reads, side by side.

Reads the rows ``[0, --rows)`` of a cached synthetic scene (``scene_bench.py``'s ``--workdir``; 12 bands at
10/20/60 m, SCL, a DEM in EPSG:4326) in the strips of the windowed prediction (tile 128 / overlap 64: each row
read once through ``RollingStrips``; the model's 13 bands, slope and DEM), alternating:

* ``warped``: every band through GDAL's warper (``common.geo.raster.aligned_offset`` patched to say "not
  aligned"), as before direct reads;
* ``direct``: the product's reader: bands already on the grid's pixels (the 10 m bands) read straight from the
  file, the others warped.

Prints seconds per mode (best of ``--repeats``), the ratio, and whether the two read the same values.

    python benchmarks/scene_read_bench.py --scene /work/bench/scene/scene_10980 --rows 2048 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.geo import block_cache, raster  # noqa: E402
from imagery.data.bands import BANDS  # noqa: E402
from imagery.data.sentinel2 import open_scene  # noqa: E402
from imagery.inference.config import SceneConfig  # noqa: E402
from imagery.inference.predict import tile_starts  # noqa: E402
from imagery.inference.scene import RollingStrips, _StripReader, plan_inputs  # noqa: E402
from imagery.inference.segmenter import SegmenterMeta  # noqa: E402

MODEL_BANDS = [b for b in BANDS if b != "B10"]  # the L2A model of scene_bench.py: 12 bands, slope, DEM


class _Bands:
    """What ``plan_inputs`` asks of a segmenter: its bands and meta."""

    def __init__(self) -> None:
        self.bands = MODEL_BANDS
        self.meta = SegmenterMeta("small_rau_net1", {}, len(MODEL_BANDS), band_order=MODEL_BANDS)


def read_all(scene: Path, rows: int, tile: int = 128, overlap: int = 64) -> tuple[float, np.ndarray]:
    """Seconds to read rows ``[0, rows)`` in the windowed prediction's strips, and a checksum per band."""
    cfg = SceneConfig(scene=str(scene), model_uri="bench", out="", dem=str(scene / "dem.tif"), progress=False)
    inp = plan_inputs(open_scene(scene), _Bands(), cfg, lambda _: None)
    height = min(rows, inp.grid.height)
    sums = np.zeros(len(inp.model_bands))
    t0 = time.perf_counter()
    with block_cache(64), _StripReader(inp, cfg) as reader:  # as inside predict_scene's COG writers (64 MB)
        strips = RollingStrips(reader.read)
        for y in tile_starts(max(height, tile), tile, overlap):
            raw, _, _ = strips(y, min(tile, height - y))
            sums += np.nansum(raw[:, : tile - overlap], axis=(1, 2))
    return time.perf_counter() - t0, sums


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scene", required=True, help="a scene folder written by scene_bench.py (with dem.tif)")
    p.add_argument("--rows", type=int, default=2048, help="rows read (default 2048 of 10980)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--modes", default="warped,direct", help="modes to run (one per process gives its peak RSS)")
    args = p.parse_args()
    modes = args.modes.split(",")
    scene = Path(args.scene)
    real = raster.aligned_offset
    best: dict[str, float] = {}
    sums: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for mode in modes:
            raster.aligned_offset = (lambda a, b: None) if mode == "warped" else real  # type: ignore[assignment]
            secs, sums[mode] = read_all(scene, args.rows)
            best[mode] = min(best.get(mode, float("inf")), secs)
    raster.aligned_offset = real
    same = np.array_equal(sums["warped"], sums["direct"]) if len(sums) == 2 else None
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load {os.getloadavg()}")
    print(f"scene {scene.name}, rows 0-{args.rows}, best of {args.repeats}")
    print(f"peak RSS of the process: {peak_mb:.0f} MB")
    print("| mode | seconds | vs warped | same values |")
    print("|---|---:|---:|---|")
    for mode in modes:
        ratio = f"{best['warped'] / best[mode]:.2f}x" if "warped" in best else "-"
        print(f"| {mode} | {best[mode]:.2f} | {ratio} | {same} |")


if __name__ == "__main__":
    main()
