"""``python -m pipelines.prepare_imagery``: pack L4S HDF5 patches into a memory-mapped cache.

Reads every ``image_N.h5`` / ``mask_N.h5`` of the chosen split(s) once, checks them all
(reporting every bad file together), and writes ``OUT/<split>_images.npy`` (N, 14, H, W),
``OUT/<split>_masks.npy`` (N, H, W) and ``OUT/index.json``. Training then reads ``OUT`` with
``--data OUT`` (``imagery.data.load_patches`` accepts a cache folder transparently).

Examples::

    python -m pipelines.prepare_imagery --data ../L4S --out cache/l4s --split train val
    python -m pipelines.prepare_imagery --data ../shared/data/landslide4sense_camduc --out cache/camduc
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.cli import add_common_args, print_summary, progress_printer, run_main
from imagery.data.cache import CACHE_DTYPES, PrepareImageryConfig, prepare_cache

EXPERIMENT = "imagery-prepare"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.prepare_imagery", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="L4S folder (official, hf or plain layout)")
    p.add_argument("--out", required=True, help="cache folder to write (index.json + .npy per split)")
    p.add_argument("--split", nargs="+", default=["train"], help="split(s) to pack: train, val, test (default train)")
    p.add_argument("--layout", default=None, choices=["official", "hf", "plain"], help="force the layout")
    p.add_argument("--dtype", default="float32", choices=CACHE_DTYPES, help="image dtype in the cache")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from common.tracking import setup_tracking, tracked_run  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    cfg = PrepareImageryConfig(
        data=args.data, out=args.out, splits=list(args.split), layout=args.layout, dtype=args.dtype, seed=args.seed
    )
    setup_tracking(args.tracking_uri, verbose=args.verbose)
    with tracked_run(args.experiment or EXPERIMENT, cfg, run_name=args.run_name) as run:
        entries = prepare_cache(cfg, log=progress_printer(args.json))
    patches = {e["images"].removesuffix("_images.npy"): int(e["shape"][0]) for e in entries}
    print_summary({"run_id": run.info.run_id, "cache": cfg.out, "patches": patches}, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
