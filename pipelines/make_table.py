"""Write a study-sized synthetic cell table (a hive-partitioned Parquet dataset).

``python -m pipelines.make_table --like carinthia --rows 57842689 --out DIR [--positive-rate 0.004] [--seed 42]``

The table follows the seed study's Carinthia data (column names, dtypes, ranges, marginal statistics,
missing rates; ``slide`` 0/1 label; ``x``/``y`` cell centres on a 10 m grid in EPSG:3416); the
mechanism behind the label is documented in :mod:`tabular.carinthia`. Memory holds one block of
cells at a time; the folder is written under a temporary name and renamed when complete (SIGTERM and
Ctrl-C remove it). A table that needs more memory than is available, or more disk than is free, is
refused before anything is written (:func:`tabular.carinthia.check_resources`).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Literal

from common.cli import RunOptions, positive_int
from common.options import arg, nested
from pipelines._command import Command, Context
from tabular.config import STUDY_ROWS


@dataclass
class MakeTableOptions:
    """The flags of ``python -m pipelines.make_table``."""

    out: str = arg("output dataset folder")
    like: Literal["carinthia"] = arg("which study's table to imitate", default="carinthia")
    rows: int = arg("cells (default: the study's %(default)s)", default=STUDY_ROWS, type=positive_int)
    positive_rate: float = arg("expected share of slide = 1 (default 0.004)", default=0.004)
    rows_per_part: int = arg("rows per partition file", default=2_000_000, type=positive_int)
    run: RunOptions = nested(RunOptions)


def run(o: MakeTableOptions, ctx: Context) -> dict[str, object]:
    """Write the table (:func:`tabular.carinthia.write_carinthia_like`) with a progress bar. SIGTERM ends like
    Ctrl-C: the hidden staging folder is removed (common.atomic)."""
    from tqdm import tqdm  # noqa: PLC0415 - progress bar only when writing

    from tabular.carinthia import write_carinthia_like  # noqa: PLC0415 - loaded when the command runs

    with tqdm(total=o.rows, unit="row", unit_scale=True, disable=None, file=sys.stderr) as bar:
        res = ctx.result = write_carinthia_like(
            o.out,
            o.rows,
            seed=o.run.seed,
            positive_rate=o.positive_rate,
            rows_per_part=o.rows_per_part,
            progress=lambda done, total: bar.update(done - bar.n),
        )
    ctx.say(
        f"wrote {res.out}: {res.rows:,} rows ({res.height} x {res.width} cells of 10 m), {res.positives:,} slides "
        f"({res.positives / res.rows:.3%}), {res.parts} partition(s) in {res.seconds:.1f}s"
    )
    return dataclasses.asdict(res) | {"files": [str(res.out)]}


COMMAND = Command("make_table", MakeTableOptions, run, doc=__doc__)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
