"""``python -m pipelines.prepare_imagery``: pack L4S HDF5 patches into a memory-mapped cache.

Reads every ``image_N.h5`` / ``mask_N.h5`` of the chosen split(s) once, checks them all
(reporting every bad file together), and writes ``OUT/<split>_images.npy`` (N, 14, H, W),
``OUT/<split>_masks.npy`` (N, H, W) and ``OUT/index.json``. Training then reads ``OUT`` with
``--data OUT`` (``imagery.dataset.load_patches`` accepts a cache folder transparently).

Examples::

    python -m pipelines.prepare_imagery --data ../L4S --out cache/l4s --split train val
    python -m pipelines.prepare_imagery --data ../shared/data/landslide4sense_camduc --out cache/camduc
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.cli import add_common_args, run_main

EXPERIMENT = "imagery-prepare"


@dataclass
class PrepareImageryConfig:
    """Flags of ``prepare_imagery``: source folder, cache folder, splits, layout, cache dtype."""

    data: str
    out: str
    splits: list[str] = field(default_factory=lambda: ["train"])
    layout: str | None = None
    dtype: str = "float32"
    seed: int = 42


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.prepare_imagery", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="L4S folder (official, hf or plain layout)")
    p.add_argument("--out", required=True, help="cache folder to write (index.json + .npy per split)")
    p.add_argument("--split", nargs="+", default=["train"], help="split(s) to pack: train, val, test (default train)")
    p.add_argument("--layout", default=None, choices=["official", "hf", "plain"], help="force the layout")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="image dtype in the cache")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = PrepareImageryConfig(
        data=args.data, out=args.out, splits=list(args.split), layout=args.layout, dtype=args.dtype, seed=args.seed
    )
    from common.fingerprint import Fingerprint
    from common.tracking import log_fingerprint, tracked_run
    from imagery.cache import build_cache
    from imagery.dataset import detect_layout

    if not Path(cfg.data).exists():
        raise FileNotFoundError(f"{cfg.data}: data folder not found")
    if detect_layout(cfg.data) == "cache":
        raise ValueError(f"{cfg.data}: is already a prepare_imagery cache; expected a folder of L4S HDF5 files")
    import mlflow

    with tracked_run(args.experiment or EXPERIMENT, cfg, run_name=args.run_name, tracking_uri=args.tracking_uri):
        for split in cfg.splits:
            t0 = time.perf_counter()
            entry = build_cache(cfg.data, cfg.out, split=split, layout=cfg.layout, dtype=cfg.dtype)
            secs = time.perf_counter() - t0
            n = int(entry["shape"][0])
            log_fingerprint(Fingerprint(entry["fingerprint"], n, 0, str(cfg.data)), prefix=f"data_{split}")
            mlflow.log_metrics(
                {f"{split}_patches": n, f"{split}_seconds": secs, f"{split}_nonfinite": entry["n_nonfinite"]}
            )
            labelled = "with masks" if entry["masks"] else "no masks"
            print(f"{split}: {n} patches ({labelled}) -> {Path(cfg.out) / entry['images']} in {secs:.1f}s")
        mlflow.log_artifact(str(Path(cfg.out) / "index.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
