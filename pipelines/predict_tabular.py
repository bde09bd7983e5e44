"""Apply a logged tabular landslide model to a new region table.

``python -m pipelines.predict_tabular --model URI --data new.csv --out preds.csv [--top-k 3]``

``URI`` is ``runs:/<run_id>/model``, a run id, a ``models:/`` URI or a local model folder. The
output CSV (written atomically) has the region id, ``p_landslide`` (probability), ``label`` (0/1 at
the model's stored threshold) and the top-k SHAP reasons (``reason_i_feature``, ``reason_i_value``,
``reason_i_shap`` in log-odds). Columns are matched by name; missing feature columns are an error;
categorical levels not seen in training are treated as missing and counted (warning + metric).

``--compiled`` compiles the model's trees to native code (lleaves/LLVM, a few seconds; cached with
``--compile-cache DIR``) before scoring: the same probabilities as LightGBM to 1e-9, several times
faster on large tables. SHAP reasons still come from LightGBM (use ``--top-k 0`` for speed).

Large cell tables (``--data`` a Parquet dataset folder or Arrow IPC file) are scored batch by batch
into a Parquet dataset folder ``--out`` (``x``, ``y``, ``p_landslide``, ``label``; no SHAP reasons);
``--raster-out susceptibility.tif`` also writes the probabilities onto the table's grid as a COG,
``susceptibility_classes.tif`` (5 classes) and ``susceptibility_map.png`` (:mod:`tabular.susceptibility`).
``--engine dask`` scores the partitions on a Dask cluster (:mod:`tabular.large.dask_engine`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.cli import UserError, add_common_args, csv_list, non_negative_int, positive_int, print_summary, run_main
from common.tracking import setup_tracking, tracked_run
from tabular.config import PredictTabularConfig
from tabular.large import predict


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.predict_tabular", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="runs:/<run_id>/model, a run id, models:/... or a model folder")
    p.add_argument("--data", required=True, help="CSV or Parquet region table with the training feature columns")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument(
        "--top-k",
        type=non_negative_int,
        default=3,
        help="SHAP reasons per region; 0 skips SHAP (large tables) (default %(default)s)",
    )
    p.add_argument(
        "--id-column", default=None, help="region id column (default: region_id if present, else the row number)"
    )
    p.add_argument(
        "--compiled",
        action="store_true",
        help="compile the trees to native code with lleaves (LLVM) before scoring: a few seconds of compile "
        "time, then several times faster probabilities, equal to LightGBM's to 1e-9 (SHAP reasons still use LightGBM)",
    )
    p.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help="with --compiled: folder caching the compiled code per model and CPU (default: no cache). The "
        "cache holds native code that is executed: keep it private (anyone who can write it can run code)",
    )
    p.add_argument(
        "--raster-out",
        default=None,
        metavar="TIF",
        help="large tables: write P(landslide) on the table's grid as a COG, plus 5 classes and a PNG map",
    )
    p.add_argument("--grid", default=None, metavar="REF.tif", help="grid for --raster-out when the table has none")
    p.add_argument(
        "--class-breaks",
        type=csv_list,
        default=None,
        metavar="B1,B2,B3,B4",
        help="probability breaks of the 5 classes (default: 50/75/90/97.5th percentiles of the mapped area)",
    )
    p.add_argument(
        "--allow-sampled-map",
        action="store_true",
        help="with --raster-out: map a table built with --negatives-per-positive anyway (a warning; its map shows "
        "only the sampled cells). Without it such a table is refused: rebuild it with --all-cells",
    )
    p.add_argument("--engine", choices=["local", "dask"], default="local", help="large tables: local or Dask")
    p.add_argument("--scheduler", default=None, help="with --engine dask: scheduler address (default: local cluster)")
    p.add_argument("--batch-rows", type=positive_int, default=262_144, help="large tables: rows per batch")
    add_common_args(p)
    return p


def _breaks(values: list[str] | None) -> list[float] | None:
    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except ValueError:
        raise UserError(f"--class-breaks expects numbers, got {','.join(values)}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.compile_cache is not None and not args.compiled:
        raise UserError("--compile-cache needs --compiled")
    cfg = PredictTabularConfig(
        model=args.model,
        data=args.data,
        out=args.out,
        top_k=args.top_k,
        id_column=args.id_column,
        seed=args.seed,
        experiment=args.experiment or "predict_tabular",
        run_name=args.run_name,
        tracking_uri=args.tracking_uri,
        compiled=args.compiled,
        compile_cache=args.compile_cache,
        raster_out=args.raster_out,
        grid=args.grid,
        class_breaks=_breaks(args.class_breaks),
        allow_sampled_map=args.allow_sampled_map,
        engine=args.engine,
        scheduler=args.scheduler,
        batch_rows=args.batch_rows,
    )
    uri = setup_tracking(cfg.tracking_uri, verbose=args.verbose)
    with tracked_run(cfg.experiment, cfg, run_name=cfg.run_name):
        res = predict(cfg, tracking_uri=uri)
    if res.unseen:
        print(
            f"warning: categorical levels not seen in training were treated as missing: {res.unseen}", file=sys.stderr
        )
    for note in res.warnings:
        print(f"warning: {note}", file=sys.stderr)
    if not args.json:
        print(f"wrote {res.out}: {res.rows} regions, {res.positives} predicted landslides", flush=True)
        for path in res.maps:
            print(f"wrote {path}", flush=True)
    print_summary(
        {
            "run_id": res.run_id,
            "out": res.out,
            "rows": res.rows,
            "positives": res.positives,
            "threshold": res.threshold,
            "compiled": res.compiled,
            "unseen_category_values": res.unseen,
            "maps": list(res.maps),
            "warnings": list(res.warnings),
        },
        as_json=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
