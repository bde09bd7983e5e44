"""Build a cell table (Parquet dataset) from conditioning-factor rasters and a landslide inventory.

```
python -m pipelines.build_table --rasters F1.tif F2.tif ... --inventory INVENTORY --out TABLE
    [--grid REF.tif] [--categorical NAME,...] [--dem DEM.tif --terrain slope,aspect,curvature,tpi,tri,roughness,twi]
    [--distance-to NAME=VECTOR ...] [--inventory-filter "Year_obs>=2005"] [--negatives-per-positive K | --all-cells]
    [--buffer-m B] [--seed S]
```

What each option does, the column names, the sampling and the output format are in
:mod:`tabular.build`. The run is logged to MLflow (config, counts, seconds, cells/s).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from common.cli import add_common_args, csv_list, positive_int, print_summary, progress_printer, run_main
from tabular.config import TERRAIN_CHOICES

if TYPE_CHECKING:
    from tabular.build import BuildTableConfig, BuildTableResult


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.build_table", description=__doc__.splitlines()[0])
    p.add_argument("--rasters", nargs="*", default=[], metavar="[NAME=]PATH", help="factor rasters (column = stem)")
    p.add_argument(
        "--inventory",
        required=True,
        help="landslides: polygons/points (GPKG, SHP, GeoJSON, CSV lon/lat) or a label raster",
    )
    p.add_argument("--out", required=True, help="output Parquet dataset folder")
    p.add_argument("--grid", default=None, metavar="REF.tif", help="reference grid (default: the first raster's)")
    p.add_argument(
        "--categorical", type=csv_list, default=[], help="comma-separated class rasters (nearest resampling)"
    )
    p.add_argument("--dem", default=None, help="DEM for terrain factors")
    p.add_argument("--terrain", type=csv_list, default=[], help=f"comma-separated: {','.join(TERRAIN_CHOICES)}")
    p.add_argument("--distance-to", nargs="*", default=[], metavar="NAME=VECTOR", help="distance in metres to features")
    p.add_argument("--inventory-filter", default=None, metavar="SQL", help='OGR SQL filter, e.g. "Year_obs>=2005"')
    sampling = p.add_mutually_exclusive_group()
    sampling.add_argument(
        "--negatives-per-positive",
        type=float,
        default=None,
        metavar="K",
        help="keep all positives and ~K negatives each",
    )
    sampling.add_argument("--all-cells", action="store_true", help="keep every cell (the default)")
    p.add_argument("--buffer-m", type=float, default=0.0, help="positive within this many metres of a point/line")
    p.add_argument("--keep-nodata", action="store_true", help="keep cells where a factor is nodata (as NaN)")
    p.add_argument("--block-cells", type=positive_int, default=1_000_000, help="cells processed at a time")
    add_common_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> BuildTableConfig:
    from tabular.build import BuildTableConfig  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    return BuildTableConfig(
        rasters=list(args.rasters),
        inventory=args.inventory,
        out=args.out,
        grid=args.grid,
        categorical=args.categorical,
        dem=args.dem,
        terrain=args.terrain,
        distance_to=list(args.distance_to),
        inventory_filter=args.inventory_filter,
        negatives_per_positive=args.negatives_per_positive,
        buffer_m=args.buffer_m,
        keep_nodata=args.keep_nodata,
        block_cells=args.block_cells,
        seed=args.seed,
        experiment=args.experiment or "build_table",
        run_name=args.run_name,
        tracking_uri=args.tracking_uri,
    )


def run(cfg: BuildTableConfig, *, verbose: bool = False, log=print) -> BuildTableResult:
    """Set up the store, open the run and build the table with a progress bar."""
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from tqdm import tqdm  # noqa: PLC0415 - progress bar only when building

    from common.tracking import setup_tracking, tracked_run  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from tabular.build import build_table  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    setup_tracking(cfg.tracking_uri, verbose=verbose)
    with tracked_run(cfg.experiment, cfg, run_name=cfg.run_name):
        with tqdm(unit="block", disable=None, file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            res = build_table(cfg, log=log, progress=progress)
        mlflow.log_metrics(
            {
                "rows": res.rows,
                "positives": res.positives,
                "negatives": res.negatives,
                "nodata_cells": res.nodata_cells,
                "negative_rate": res.negative_rate,
                "build_seconds": res.seconds,
                "cells_per_second": res.cells_per_second,
            }
        )
    return res


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    res = run(config_from_args(args), verbose=args.verbose, log=progress_printer(args.json))
    if args.json:
        print_summary(dataclasses.asdict(res) | {"cells_per_second": res.cells_per_second}, as_json=True)
        return 0
    print(
        f"wrote {res.out}: {res.rows:,} cells ({res.positives:,} landslide, {res.negatives:,} other; "
        f"{res.nodata_cells:,} nodata cells left out), {len(res.columns) - 3} factors, grid {res.height} x {res.width} "
        f"({res.crs}), negative rate {res.negative_rate:.4g}, {res.seconds:.1f}s ({res.cells_per_second:,.0f} cells/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
