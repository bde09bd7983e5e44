"""Reading a scene as ``predict_scene`` does, through GDAL's warper for every band vs the product's reader, side by side.

Reads the rows ``[0, --rows)`` of a cached synthetic scene (``scene_bench.py``'s ``--workdir``; 12 bands at
10/20/60 m, SCL, a DEM in EPSG:4326) in the strips of the windowed prediction (tile 128 / overlap 64: each row
read once through ``RollingStrips``; the model's 13 bands, slope and DEM), alternating:

* ``warped``: every band through GDAL's warper window by window, the DEM reprojected per strip with the exact
  transformer (``common.geo.raster.pixel_blocks`` patched to say "not aligned", ``prewarp`` off): the reader
  before direct reads;
* ``product``: the product's reader: the 10 m bands read straight from the file, the 20 m / 60 m bands and SCL
  read at their own resolution and upsampled (``RasterOnGrid``'s whole-block reads), the DEM warped onto the
  whole grid once on entry (``prewarp``) and read from that copy.

Prints seconds per mode (best of ``--repeats``), the ratio, and the largest relative difference between the
two modes' per-band sums (bit-identical for the 10 m and 20 m bands; the 60 m bands' weights and the DEM's
1/1000 px prewarp positions move values by less than 1e-3 of their unit).

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
from imagery.inference.config import SCENE_CACHE_MB, SceneConfig  # noqa: E402
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
    with block_cache(SCENE_CACHE_MB), _StripReader(inp, cfg) as reader:  # as inside predict_scene
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
    p.add_argument("--modes", default="warped,product", help="modes to run (one per process gives its peak RSS)")
    args = p.parse_args()
    modes = args.modes.split(",")
    scene = Path(args.scene)
    real_blocks, real_init = raster.pixel_blocks, raster.RasterOnGrid.__init__

    def no_prewarp(self: raster.RasterOnGrid, *a: object, **k: object) -> None:
        k["prewarp"] = False
        real_init(self, *a, **k)  # type: ignore[arg-type]

    best: dict[str, float] = {}
    sums: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for mode in modes:
            warped = mode == "warped"
            raster.pixel_blocks = (lambda a, b: None) if warped else real_blocks  # type: ignore[assignment]
            raster.RasterOnGrid.__init__ = no_prewarp if warped else real_init  # type: ignore[method-assign]
            secs, sums[mode] = read_all(scene, args.rows)
            best[mode] = min(best.get(mode, float("inf")), secs)
    raster.pixel_blocks, raster.RasterOnGrid.__init__ = real_blocks, real_init  # type: ignore[method-assign]
    diff = None
    if len(sums) == 2:
        a, b = sums.values()
        diff = f"{float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12))):.1e}"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load {os.getloadavg()}")
    print(f"scene {scene.name}, rows 0-{args.rows}, best of {args.repeats}")
    print(f"peak RSS of the process: {peak_mb:.0f} MB")
    print("| mode | seconds | vs warped | largest relative difference of a band's sum |")
    print("|---|---:|---:|---|")
    for mode in modes:
        ratio = f"{best['warped'] / best[mode]:.2f}x" if "warped" in best else "-"
        print(f"| {mode} | {best[mode]:.2f} | {ratio} | {diff} |")


if __name__ == "__main__":
    main()
