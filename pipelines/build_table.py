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

import dataclasses
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.cli import RunOptions, UserError, positive_int
from common.options import arg, fill, nested
from pipelines._command import Command, Context
from tabular.config import TERRAIN_CHOICES

if TYPE_CHECKING:
    from tabular.build import BuildTableConfig

EXPERIMENT = "build_table"


@dataclass
class BuildTableOptions:
    """The flags of ``python -m pipelines.build_table`` (logged as the run's ``config.json``)."""

    inventory: str = arg("landslides: polygons/points (GPKG, SHP, GeoJSON, CSV lon/lat) or a label raster")
    out: str = arg("output Parquet dataset folder")
    rasters: list[str] = arg("factor rasters (column = stem)", default_factory=list, nargs="*", metavar="[NAME=]PATH")
    grid: str | None = arg("reference grid (default: the first raster's)", default=None, metavar="REF.tif")
    categorical: list[str] = arg("comma-separated class rasters (nearest resampling)", default_factory=list)
    dem: str | None = arg("DEM for terrain factors", default=None)
    terrain: list[str] = arg(f"comma-separated: {','.join(TERRAIN_CHOICES)}", default_factory=list)
    distance_to: list[str] = arg(
        "distance in metres to features", default_factory=list, nargs="*", metavar="NAME=VECTOR"
    )
    inventory_filter: str | None = arg('OGR SQL filter, e.g. "Year_obs>=2005"', default=None, metavar="SQL")
    negatives_per_positive: float | None = arg(
        "keep all positives and ~K negatives each (default: every cell, --all-cells)", default=None, metavar="K"
    )
    all_cells: bool = arg("keep every cell (the default; not with --negatives-per-positive)", default=False)
    buffer_m: float = arg("positive within this many metres of a point/line", default=0.0)
    keep_nodata: bool = arg("keep cells where a factor is nodata (as NaN)", default=False)
    block_cells: int = arg("cells processed at a time", default=1_000_000, type=positive_int)
    run: RunOptions = nested(RunOptions)


def library_config(o: BuildTableOptions, ctx: Context | None = None) -> BuildTableConfig:
    """The library's config for these options (what the run logs as params)."""
    from tabular.build import BuildTableConfig  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    if o.all_cells and o.negatives_per_positive is not None:
        raise UserError("--all-cells and --negatives-per-positive exclude each other: give one")
    return fill(BuildTableConfig, o, o.run, experiment=o.run.experiment or EXPERIMENT)


def run(o: BuildTableOptions, ctx: Context) -> dict[str, object]:
    """Build the table with a progress bar and log its counts."""
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from tqdm import tqdm  # noqa: PLC0415 - progress bar only when building

    from tabular.build import build_table  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    with tqdm(unit="block", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        res = ctx.result = build_table(ctx.config, log=ctx.log, progress=progress)
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
    ctx.say(
        f"wrote {res.out}: {res.rows:,} cells ({res.positives:,} landslide, {res.negatives:,} other; "
        f"{res.nodata_cells:,} nodata cells left out), {len(res.columns) - 3} factors, grid {res.height} x {res.width} "
        f"({res.crs}), negative rate {res.negative_rate:.4g}, {res.seconds:.1f}s ({res.cells_per_second:,.0f} cells/s)"
    )
    return dataclasses.asdict(res) | {"cells_per_second": res.cells_per_second, "files": [res.out]}


COMMAND = Command("build_table", BuildTableOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=library_config)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
