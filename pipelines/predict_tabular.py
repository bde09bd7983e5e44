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

import sys
from dataclasses import dataclass
from typing import Literal

from common.cli import RunOptions, UserError, non_negative_int, positive_int
from common.options import arg, fill, nested
from pipelines._command import Command, Context
from tabular.config import PredictTabularConfig

EXPERIMENT = "predict_tabular"


@dataclass
class LargeTableOptions:
    """large tables (Parquet dataset folders, Arrow IPC files) and maps"""

    raster_out: str | None = arg(
        "write P(landslide) on the table's grid as a COG, plus 5 classes and a PNG map", default=None, metavar="TIF"
    )
    grid: str | None = arg("grid for --raster-out when the table has none", default=None, metavar="REF.tif")
    class_breaks: list[float] | None = arg(
        "probability breaks of the 5 classes (default: 50/75/90/97.5th percentiles of the mapped area)",
        default=None,
        metavar="B1,B2,B3,B4",
    )
    allow_sampled_map: bool = arg(
        "with --raster-out: map a table built with --negatives-per-positive anyway (a warning; its map shows "
        "only the sampled cells). Without it such a table is refused: rebuild it with --all-cells",
        default=False,
    )
    engine: Literal["local", "dask"] = arg("local or Dask", default="local")
    scheduler: str | None = arg("with --engine dask: scheduler address (default: local cluster)", default=None)
    batch_rows: int = arg("rows per batch", default=65_536, type=positive_int)


@dataclass
class PredictTabularOptions:
    """The flags of ``python -m pipelines.predict_tabular`` (logged as the run's ``config.json``)."""

    model: str = arg("runs:/<run_id>/model, a run id, models:/... or a model folder")
    data: str = arg("CSV or Parquet region table with the training feature columns")
    out: str = arg("output CSV")
    top_k: int = arg(
        "SHAP reasons per region; 0 skips SHAP (large tables) (default %(default)s)", default=3, type=non_negative_int
    )
    id_column: str | None = arg("region id column (default: region_id if present, else the row number)", default=None)
    compiled: bool = arg(
        "compile the trees to native code with lleaves (LLVM) before scoring: a few seconds of compile "
        "time, then several times faster probabilities, equal to LightGBM's to 1e-9 (SHAP reasons still use LightGBM)",
        default=False,
    )
    compile_cache: str | None = arg(
        "with --compiled: folder caching the compiled code per model and CPU (default: no cache). The "
        "cache holds native code that is executed: keep it private (anyone who can write it can run code)",
        default=None,
        metavar="DIR",
    )
    large: LargeTableOptions = nested(LargeTableOptions)
    run: RunOptions = nested(RunOptions)


def library_config(o: PredictTabularOptions, ctx: Context | None = None) -> PredictTabularConfig:
    """The library's config for these options (what the run logs as params)."""
    if o.compile_cache is not None and not o.compiled:
        raise UserError("--compile-cache needs --compiled")
    return fill(PredictTabularConfig, o, o.large, o.run, experiment=o.run.experiment or EXPERIMENT)


def run(o: PredictTabularOptions, ctx: Context) -> dict[str, object]:
    """Score the table (:func:`tabular.large.predict` picks the path)."""
    from tabular.large import predict  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    res = ctx.result = predict(ctx.config, tracking_uri=ctx.tracking_uri)
    if res.unseen:
        print(
            f"warning: categorical levels not seen in training were treated as missing: {res.unseen}", file=sys.stderr
        )
    for note in res.warnings:
        print(f"warning: {note}", file=sys.stderr)
    ctx.say(f"wrote {res.out}: {res.rows} regions, {res.positives} predicted landslides")
    for path in res.maps:
        ctx.say(f"wrote {path}")
    return {
        "run_id": res.run_id,
        "out": res.out,
        "rows": res.rows,
        "positives": res.positives,
        "threshold": res.threshold,
        "compiled": res.compiled,
        "unseen_category_values": res.unseen,
        "maps": list(res.maps),
        "files": [str(res.out), *map(str, res.maps)],
        "warnings": list(res.warnings),
    }


COMMAND = Command(
    "predict_tabular", PredictTabularOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=library_config
)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
