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

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import mlflow

from common.atomic import atomic_path
from common.cli import UserError, add_common_args, print_summary, run_main
from common.fingerprint import fingerprint_files
from common.geo import write_gpkg
from common.seed import seed_everything
from common.tracking import log_fingerprint, set_run_kind, setup_tracking, tracked_run
from fusion.validation import validate_inventory

EXPERIMENT = "validate"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.validate", description=__doc__.split("\n\n")[0])
    p.add_argument("--detected", required=True, help="detected polygons (GeoPackage, shapefile, GeoJSON; any CRS)")
    p.add_argument("--reference", required=True, help="reference inventory polygons (any CRS)")
    p.add_argument("--aoi", default=None, help="polygons of the area to score (default: the area both cover)")
    p.add_argument("--grid", default=None, help="probability (or 0/1) raster for pixel-level F1/IoU")
    p.add_argument("--threshold", type=float, default=0.5, help="landslide where --grid >= this (default 0.5)")
    p.add_argument("--match-iou", type=float, default=0.1, help="IoU that makes a match (default 0.1)")
    p.add_argument(
        "--out", default="metrics.csv", help="metrics CSV; the GeoPackage goes beside it (default %(default)s)"
    )
    p.add_argument("--gpkg", default=None, help="polygons with status (default: <out stem>_polygons.gpkg)")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise UserError(f"--out {out}: expected a .csv file name")
    gpkg = Path(args.gpkg) if args.gpkg else out.with_name(f"{out.stem}_polygons.gpkg")
    seed_everything(args.seed)
    setup_tracking(args.tracking_uri, verbose=args.verbose)
    inputs = [p for p in (args.detected, args.reference, args.aoi, args.grid) if p]
    with tracked_run(args.experiment or EXPERIMENT, {**vars(args), "gpkg": str(gpkg)}, run_name=args.run_name) as run:
        set_run_kind("validate")
        for path in inputs:
            if not Path(path).exists():
                raise UserError(f"{path}: file not found")
        log_fingerprint(fingerprint_files(inputs, source=args.reference), prefix="validation", context="evaluation")
        result = validate_inventory(
            args.detected,
            args.reference,
            aoi_path=args.aoi,
            grid_path=args.grid,
            match_iou=args.match_iou,
            threshold=args.threshold,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            result.table().to_csv(tmp, index=False)
        write_gpkg(result.features, gpkg, result.crs, layer="validation")
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if not math.isnan(v)})
        mlflow.log_param("metric_crs", result.metric_crs)
        mlflow.log_artifact(str(out))
        mlflow.log_artifact(str(gpkg))
    keys = ("tp", "fp", "fn", "precision", "recall", "f1", "recall_area", "pixel_f1", "pixel_iou")
    summary = {k: result.metrics[k] for k in keys if k in result.metrics}
    print_summary({"run_id": run.info.run_id, "metrics": str(out), "polygons": str(gpkg), **summary}, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
