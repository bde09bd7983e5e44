"""``python -m pipelines.validate``: score a detected landslide inventory against a reference inventory.

Object level (one-to-one greedy matching: IoU >= ``--match-iou`` or one polygon containing the other's centroid),
by count and by area, recall per size class, and pixel level on ``--grid`` (a probability or 0/1 raster); any
CRS on either side; only the area both cover (or ``--aoi``) counts. The rules are documented in
:mod:`fusion.validation`. Writes the metrics table (``metric,value`` CSV), a GeoPackage of the polygons with a
``status`` field (matched / missed / false) beside it, and logs both and the metrics to MLflow, so the UI
compares detectors on one event.

Example::

    python -m pipelines.validate --detected landslides.gpkg --reference inventory.gpkg --grid probability.tif \\
        --match-iou 0.1 --out metrics.csv
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from common.cli import RunOptions, UserError
from common.options import arg, nested, to_dict
from pipelines._command import Command, Context

EXPERIMENT = "validate"


@dataclass
class ValidateOptions:
    """The flags of ``python -m pipelines.validate`` (logged as the run's ``config.json``)."""

    detected: str = arg("detected polygons (GeoPackage, shapefile, GeoJSON; any CRS)")
    reference: str = arg("reference inventory polygons (any CRS)")
    aoi: str | None = arg("polygons of the area to score (default: the area both cover)", default=None)
    grid: str | None = arg("probability (or 0/1) raster for pixel-level F1/IoU", default=None)
    threshold: float = arg("landslide where --grid >= this (default 0.5)", default=0.5)
    match_iou: float = arg("IoU that makes a match (default 0.1)", default=0.1)
    out: str = arg("metrics CSV; the GeoPackage goes beside it (default %(default)s)", default="metrics.csv")
    gpkg: str | None = arg("polygons with status (default: <out stem>_polygons.gpkg)", default=None)
    run: RunOptions = nested(RunOptions)


def _gpkg(o: ValidateOptions) -> Path:
    out = Path(o.out)
    return Path(o.gpkg) if o.gpkg else out.with_name(f"{out.stem}_polygons.gpkg")


def logged(o: ValidateOptions, ctx: Context) -> dict[str, object]:
    """The run's params: the options with the GeoPackage path resolved."""
    if Path(o.out).suffix.lower() != ".csv":
        raise UserError(f"--out {o.out}: expected a .csv file name")
    return {**to_dict(o), "gpkg": str(_gpkg(o))}


def run(o: ValidateOptions, ctx: Context) -> dict[str, object]:
    """Score the inventory (:func:`fusion.validation.validate_inventory`), write and log the table and polygons."""
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.atomic import atomic_path  # noqa: PLC0415 - loaded when the command runs
    from common.fingerprint import fingerprint_files  # noqa: PLC0415 - loaded when the command runs
    from common.geo import validation_by_status_qml, write_gpkg  # noqa: PLC0415 - GDAL loads when the command runs
    from common.tracking import log_fingerprint, set_run_kind  # noqa: PLC0415 - MLflow loads when the command runs
    from fusion.validation import validate_inventory  # noqa: PLC0415 - loaded when the command runs

    out, gpkg = Path(o.out), _gpkg(o)
    inputs = [p for p in (o.detected, o.reference, o.aoi, o.grid) if p]
    set_run_kind("validate")
    for path in inputs:
        if not Path(path).exists():
            raise UserError(f"{path}: file not found")
    log_fingerprint(fingerprint_files(inputs, source=o.reference), prefix="validation", context="evaluation")
    result = ctx.result = validate_inventory(
        o.detected, o.reference, aoi_path=o.aoi, grid_path=o.grid, match_iou=o.match_iou, threshold=o.threshold
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        result.table().to_csv(tmp, index=False)
    write_gpkg(result.features, gpkg, result.crs, layer="validation", style_qml=validation_by_status_qml())
    mlflow.log_metrics({k: v for k, v in result.metrics.items() if not math.isnan(v)})
    mlflow.log_param("metric_crs", result.metric_crs)
    mlflow.log_artifact(str(out))
    mlflow.log_artifact(str(gpkg))
    keys = ("tp", "fp", "fn", "precision", "recall", "f1", "recall_area", "pixel_f1", "pixel_iou")
    summary = {k: result.metrics[k] for k in keys if k in result.metrics}
    return {"metrics": str(out), "polygons": str(gpkg), **summary, "files": [str(out), str(gpkg)]}


COMMAND = Command("validate", ValidateOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=logged)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
