"""``python benchmarks/map_event_bench.py [--tile 1024] [--dates 6]``: map_event's peak RSS and time, local vs Dask.

A synthetic area of two side-by-side tiles (``--tile`` px square each at 10 m, overlapping by 32 px like
neighbouring MGRS tiles), ``--dates`` pre-event and as many post-event acquisitions (one item per tile and date,
int16 band COGs + SCL with a moving cloud), a DEM with slopes and 40 landslides; ``pipelines.map_event`` runs on
it in a fresh process per engine, side by side: ``local`` and ``dask`` (2 workers). Printed per engine: wall
time, the command's own timings (compositing, change, polygons) per tile, and the peak RSS of the largest
process (``RUSAGE_CHILDREN``: the command, or the biggest Dask worker), with the ratio against ``local``.
A full Sentinel-2 tile is 10980 px; memory grows with the area only through the 1-byte detection mask.

``--segmenter``: instead of the engines, the segmenter gate (``imagery.change.segmenter``): a small RAU-Net 1
(width 8, random weights: the time is what is measured) with the pre-post temporal channels of the world's bands runs
through ``--imagery-model`` on the local engine, gated (the defaults) and with ``--no-gate``, side by side: wall
time, the segmenter's own time, tiles run of all and the skipped share, with the ratio against ``--no-gate``.
``--gdal-cache 5%,bounded``: instead of the engines, the local engine once per ``GDAL_CACHEMAX`` value, side by side
(``bounded``: unset, i.e. map_event's own bound, ``imagery.change.defaults.GDAL_CACHE_MB``; ``5%``: GDAL's default).
``--threads`` sets torch's threads in the command (``OMP_NUM_THREADS``; default 1: this machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.geo import Grid, transform_geometries, write_cog  # noqa: E402

VEG = {"B2": 0.03, "B3": 0.06, "B4": 0.03, "B8": 0.35, "B11": 0.15}
BARE = {"B2": 0.12, "B3": 0.15, "B4": 0.18, "B8": 0.24, "B11": 0.32}


def make_world(folder: Path, tile: int, n_dates: int, seed: int = 0) -> tuple[Path, Path, tuple[float, ...]]:
    rng = np.random.default_rng(seed)
    overlap = 32
    width, height = 2 * tile - overlap, tile
    world = Grid("EPSG:32632", Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), width, height)
    cols = np.arange(width, dtype=np.float32)
    dem = np.broadcast_to(100 + 3.0 * np.abs((cols % 400) - 200), (height, width)).astype(np.float32)  # ridges
    write_cog(folder / "dem.tif", dem, world, nodata=np.nan)
    slides = np.zeros((height, width), bool)
    for _ in range(40):
        r, c = rng.integers(0, height - 30), rng.integers(0, width - 30)
        slides[r : r + rng.integers(8, 30), c : c + rng.integers(6, 20)] = True
    tiles = [(0, tile), (tile - overlap, width)]
    feats = []
    days = [f"2023-0{m}-{d:02d}" for m, d in zip([3, 3, 4, 4, 5, 5], [5, 20, 4, 19, 4, 10], strict=True)][:n_dates]
    days += [f"2023-0{m}-{d:02d}" for m, d in zip([5, 6, 6, 7, 7, 8], [25, 9, 24, 9, 24, 8], strict=True)][:n_dates]
    for k, day in enumerate(days):
        post = k >= n_dates
        scl = np.full((height, width), 4, np.uint8)
        c0 = (k * 97) % width
        scl[:, c0 : c0 + width // 8] = 9
        for t, (a, b) in enumerate(tiles):
            grid = Grid(world.crs, world.transform * Affine.translation(a, 0), b - a, height)
            assets = {}
            for band, veg in VEG.items():
                arr = np.full((height, b - a), veg, np.float32) * rng.uniform(0.95, 1.05, (height, b - a))
                if post:
                    arr[slides[:, a:b]] = BARE[band]
                arr[scl[:, a:b] == 9] = 0.5
                name = f"{day}_{t}_{band}.tif"
                write_cog(folder / name, np.round(arr * 1e4).astype(np.int16), grid, nodata=0)
                assets[band] = {"href": name, "raster:bands": [{"scale": 1e-4, "offset": 0.0}]}
            write_cog(folder / f"{day}_{t}_SCL.tif", scl[:, a:b], grid, nodata=0)
            assets["SCL"] = {"href": f"{day}_{t}_SCL.tif"}
            fp = transform_geometries(shapely.box(*grid.bounds), grid.crs, "EPSG:4326")
            feats.append(
                {
                    "type": "Feature",
                    "id": f"T{t}_{day}",
                    "geometry": shapely.geometry.mapping(fp),
                    "bbox": list(fp.bounds),
                    "properties": {"datetime": f"{day}T10:00:00Z", "eo:cloud_cover": 12.5},
                    "assets": assets,
                }
            )
    items = folder / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": feats}), encoding="utf-8")
    left, bottom, right, top = world.bounds
    inset = 0.05 * (right - left)  # the lon/lat box of a UTM box pokes out by the grid convergence (~2 degrees)
    inner = shapely.box(left + inset, bottom + inset, right - inset, top - inset)
    bbox = transform_geometries(shapely.segmentize(inner, 50.0), world.crs, "EPSG:4326").bounds
    return items, folder / "dem.tif", bbox


def make_model(folder: Path) -> Path:
    """A small RAU-Net 1 (width 8, random weights) on the pre-post channels of the world's bands, saved as a folder."""
    import torch  # noqa: PLC0415 - only for --segmenter

    from imagery.data.sen12_temporal import s2_channels  # noqa: PLC0415
    from imagery.inference import SegmenterMeta, save_segmenter_files  # noqa: PLC0415
    from imagery.models import create_model  # noqa: PLC0415

    bands = ("B02", "B03", "B04", "B08", "B11")
    one = {b: np.zeros((1, 1), np.float32) for b in bands}
    names = [*s2_channels(one, one, "pre-post", bands=bands)[1], "slope"]
    torch.manual_seed(0)
    kw = {"in_channels": len(names), "num_classes": 2, "head": "mono", "base_width": 8}
    meta = SegmenterMeta("small_rau_net1", kw, 23, band_order=names, head="mono", channels=names)
    meta.temporal, meta.sensor = "pre-post", "s2"
    save_segmenter_files(create_model("small_rau_net1", **kw), meta, folder)
    return folder


def run(
    engine: str,
    items: Path,
    dem: Path,
    bbox: tuple[float, ...],
    out: Path,
    extra: tuple[str, ...] = (),
    threads: int = 0,
    env_extra: dict[str, str] | None = None,
) -> dict:
    cmd = [sys.executable, "-m", "pipelines.map_event", "--bbox", *map(str, bbox), "--event-date", "2023-05-16"]
    cmd += ["--items", str(items), "--dem", str(dem), "--out", str(out), "--engine", engine, "--workers", "2"]
    cmd += ["--tracking-uri", f"sqlite:///{out.parent / 'mlflow.db'}", "--pre-days", "90", "--post-days", "90", *extra]
    cmd += ["--max-area-km2", "30000"]  # two full Sentinel-2 tiles are ~24,000 km2; the default limit is 500
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    env.update(env_extra or {})
    t = time.perf_counter()
    code = f"import resource,subprocess,sys; r=subprocess.run({cmd!r}, env=None).returncode; " \
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); sys.exit(r)"  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{engine} failed:\n{proc.stderr[-2000:]}")
    peak = int(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    seg = summary["segmenter"] if isinstance(summary["segmenter"], dict) else {}
    return {
        "wall_s": wall,
        "peak_mb": peak,
        **summary["timings"],
        "n": summary["n_landslides"],
        "out": out,
        "tiles_run": seg.get("tiles_run"),
        "tiles_total": seg.get("tiles_total"),
        "skipped_share": seg.get("skipped_share"),
    }


def gate_bench(args: argparse.Namespace) -> None:
    """The segmenter gate on vs ``--no-gate``, side by side (module docstring)."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        items, dem, bbox = make_world(tmp, args.tile, args.dates)
        model = make_model(tmp / "model")
        common = ("--imagery-model", str(model), "--device", "cpu", "--runtime", "torch")
        res = {
            "no-gate": run("local", items, dem, bbox, tmp / "nogate", (*common, "--no-gate"), args.threads),
            "gate": run("local", items, dem, bbox, tmp / "gate", common, args.threads),
        }
    base = res["no-gate"]
    print(f"world: 2 tiles of {args.tile} px, {args.dates}+{args.dates} dates; torch threads {args.threads}")
    print(f"{'mode':8} {'wall s':>8} {'ratio':>6} {'segmenter s':>12} {'ratio':>6} {'tiles run':>14} {'skipped':>8} "
          f"{'polygons':>9} {'peak MB':>8}")  # fmt: skip
    for mode, r in res.items():
        print(
            f"{mode:8} {r['wall_s']:8.1f} {r['wall_s'] / base['wall_s']:6.2f} {r['segmenter_s']:12.1f} "
            f"{r['segmenter_s'] / base['segmenter_s']:6.2f} {r['tiles_run']:>6}/{r['tiles_total']:<7} "
            f"{r['skipped_share']:8.1%} {r['n']:9d} {r['peak_mb']:8d}"
        )
    saved = base["wall_s"] - res["gate"]["wall_s"]
    print(f"time saved by the gate: {saved:.1f} s of {base['wall_s']:.1f} s; load: {os.getloadavg()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tile", type=int, default=1024, help="tile size, px (a Sentinel-2 tile is 10980)")
    p.add_argument("--dates", type=int, default=6, help="acquisitions per window (default 6)")
    p.add_argument("--engines", default="local,dask", help="engines to run, comma-separated (default local,dask)")
    p.add_argument("--segmenter", action="store_true", help="measure the segmenter gate instead of the engines")
    p.add_argument("--threads", type=int, default=1, help="--segmenter: torch threads in the command (default 1)")
    p.add_argument(
        "--gdal-cache",
        default="",
        help="instead of the engines: the local engine once per GDAL_CACHEMAX value, comma-separated ('bounded': "
        "unset, map_event's own bound; '5%%': GDAL's default; '64': MB)",
    )
    args = p.parse_args()
    if args.segmenter:
        gate_bench(args)
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        items, dem, bbox = make_world(tmp, args.tile, args.dates)
        print(f"world: 2 tiles of {args.tile} px, {args.dates}+{args.dates} dates, {time.perf_counter() - t:.0f} s")
        if args.gdal_cache:
            res = {}
            for value in args.gdal_cache.split(","):
                env = {} if value == "bounded" else {"GDAL_CACHEMAX": value}
                res[f"cache {value}"] = run("local", items, dem, bbox, tmp / f"c{len(res)}", env_extra=env)
        else:
            res = {e: run(e, items, dem, bbox, tmp / e) for e in args.engines.split(",")}
        same = all(
            json.loads((next(iter(res.values()))["out"] / "landslides.geojson").read_text())["features"]
            == json.loads((res[e]["out"] / "landslides.geojson").read_text())["features"]
            for e in res
        )
    base = next(iter(res.values()))
    print(f"{'engine':12} {'wall s':>8} {'ratio':>6} {'peak MB':>8} {'composite s/tile':>17} {'change s/tile':>14} "
          f"{'polygons s':>11} {'polygons':>9}")  # fmt: skip
    for e, r in res.items():
        print(
            f"{e:12} {r['wall_s']:8.1f} {r['wall_s'] / base['wall_s']:6.2f} {r['peak_mb']:8d} "
            f"{r['composite_s'] / 2:17.1f} {r['change_s'] / 2:14.2f} {r['polygons_s']:11.2f} {r['n']:9d}"
        )
    print(f"identical inventories: {same}; load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
