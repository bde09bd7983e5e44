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

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from common.cli import add_common_args, handle_sigterm, positive_int, print_summary, quiet_third_party, run_main
from tabular.carinthia import STUDY_ROWS, write_carinthia_like


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.make_table", description=__doc__.splitlines()[0])
    p.add_argument("--like", choices=["carinthia"], default="carinthia", help="which study's table to imitate")
    p.add_argument("--rows", type=positive_int, default=STUDY_ROWS, help="cells (default: the study's %(default)s)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--positive-rate", type=float, default=0.004, help="expected share of slide = 1 (default 0.004)")
    p.add_argument("--rows-per-part", type=positive_int, default=2_000_000, help="rows per partition file")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_third_party(args.verbose)
    handle_sigterm()  # SIGTERM ends like Ctrl-C: the hidden staging folder is removed (common.atomic)
    from tqdm import tqdm  # noqa: PLC0415 - progress bar only when writing

    with tqdm(total=args.rows, unit="row", unit_scale=True, disable=None, file=sys.stderr) as bar:
        res = write_carinthia_like(
            args.out,
            args.rows,
            seed=args.seed,
            positive_rate=args.positive_rate,
            rows_per_part=args.rows_per_part,
            progress=lambda done, total: bar.update(done - bar.n),
        )
    if args.json:
        print_summary(dataclasses.asdict(res), as_json=True)
        return 0
    print(
        f"wrote {res.out}: {res.rows:,} rows ({res.height} x {res.width} cells of 10 m), {res.positives:,} slides "
        f"({res.positives / res.rows:.3%}), {res.parts} partition(s) in {res.seconds:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
