"""``python -m pipelines.predict_scene``: a Sentinel-2 scene in, landslide probability, mask and polygons out.

``--scene`` is a folder of per-band files (``B04.tif``, ``T33TUM_20180926T100031_B04_10m.jp2``, ``red.tif``),
an unzipped ``.SAFE`` product, a multi-band GeoTIFF (with ``--bands`` naming its band order) or a STAC item
JSON. Bands are brought to the scene's finest band grid, converted to reflectance with the product's
scale/offset and then to the model's units; SCL cloud, shadow, saturated, nodata and snow pixels are
masked. The scene is processed one row of tiles at a time (bounded memory) and written to ``--out`` as
``probability.tif``, ``mask.tif`` (COGs on the scene grid), ``landslides.geojson`` (EPSG:4326),
``landslides.gpkg`` (scene CRS), ``overview.png`` and ``summary.json``, all logged to an MLflow run.

Examples::

    python -m pipelines.predict_scene --scene ../shared/data/sentinel2_l2a_cogs_29RKH --model runs:/<id> --out out/
    python -m pipelines.predict_scene --scene S2B_MSIL2A_...SAFE --dem dem.tif --model runs:/<id> --out out/
    python -m pipelines.predict_scene --scene stack.tif --bands B02,B03,B04,B08 --model runs:/<id> --out out/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.cli import (
    UserError,
    add_common_args,
    csv_list,
    positive_int,
    print_summary,
    progress_printer,
    run_main,
)
from common.seed import seed_everything
from imagery.data.sentinel2 import SCENE_SCALES
from imagery.inference.config import SceneConfig
from pipelines._register import model_or_champion, segmenter_meta
from pipelines._segmenter_args import add_segmenter_args, engine_spec_of

EXPERIMENT = "imagery-scene"


def _scl_classes(text: str) -> list[int]:
    try:
        values = [int(v) for v in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated SCL class numbers 0-11, got {text!r}") from None
    if any(not 0 <= v <= 11 for v in values):
        raise argparse.ArgumentTypeError(f"SCL classes are 0-11, got {text!r}")
    return values


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    d = SceneConfig()
    p = argparse.ArgumentParser(prog="python -m pipelines.predict_scene", description=__doc__.split("\n\n")[0])
    p.add_argument("--scene", required=True, help="band folder, .SAFE folder, multi-band GeoTIFF or STAC item JSON")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--dem", default=None, help="DEM raster in any CRS covering the scene (needed for slope/DEM models)")
    p.add_argument("--bands", type=csv_list, default=None, help="band order of a multi-band GeoTIFF, e.g. B02,B03,B04")
    p.add_argument(
        "--image-scale",
        default="auto",
        choices=SCENE_SCALES,
        help="override the product's DN scale: reflectance, dn (DN/10000), dn-offset ((DN-1000)/10000)",
    )
    p.add_argument("--tile", type=positive_int, default=d.tile, help="tile size, px (default %(default)s)")
    p.add_argument("--overlap", type=int, default=d.overlap, help="tile overlap, px (default %(default)s)")
    p.add_argument(
        "--min-area-m2",
        type=_non_negative_float,
        default=d.min_area_m2,
        help="smallest landslide polygon kept, m2 (default 500: five 10 m pixels; below one pixel's area: a warning)",
    )
    p.add_argument(
        "--scl-mask",
        type=_scl_classes,
        default=d.scl_mask,
        help="SCL classes masked as nodata (default 0,1,3,8,9,10,11: nodata, saturated, shadow, clouds, cirrus, snow)",
    )
    p.add_argument(
        "--fill-b10",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fill a model-needed B10 that an L2A product lacks with its L4S mean (a warning; default on)",
    )
    p.add_argument(
        "--no-skip",
        action="store_true",
        help="run every tile: no skipping of tiles all water or flat (steepest slope below --flat-slope-deg)",
    )
    p.add_argument(
        "--flat-slope-deg",
        type=_non_negative_float,
        default=d.flat_slope_deg,
        help="with --dem: tiles whose steepest slope is below this (degrees) are not run (default %(default)s)",
    )
    p.add_argument(
        "--allow-resolution-mismatch",
        action="store_true",
        help="run even when the scene's pixel size is more than 1.5x off the model's training GSD (a warning)",
    )
    p.add_argument("--no-log-rasters", action="store_true", help="do not copy the two COGs into the MLflow run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_segmenter_args(p, unit="tiles", mask_options=False, champion=True)
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from common.tracking import setup_tracking, tracked_run  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from imagery.inference.scene import run_scene, scene_summary_line  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    uri = setup_tracking(args.tracking_uri, verbose=args.verbose)
    model = model_or_champion(args.model, "imagery", "--model", required=True, log=progress_printer(args.json))
    cfg = SceneConfig(
        scene=args.scene,
        model_uri=model,
        out=args.out,
        dem=args.dem,
        bands=args.bands,
        image_scale=args.image_scale,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        runtime=engine_spec_of(args),
        min_area_m2=args.min_area_m2,
        threshold=args.threshold,
        tta=args.tta,
        scl_mask=args.scl_mask,
        fill_b10=args.fill_b10,
        skip=not args.no_skip,
        flat_slope_deg=args.flat_slope_deg,
        allow_resolution_mismatch=args.allow_resolution_mismatch,
        log_rasters=not args.no_log_rasters,
        progress=not args.no_progress,
        seed=args.seed,
    )
    seed_everything(cfg.seed)
    with tracked_run(args.experiment or EXPERIMENT, cfg, run_name=args.run_name) as run:
        temporal = segmenter_meta(str(model)).get("temporal")  # {} when unreadable: run_scene then says why
        if temporal:  # a time-series model needs pre/post composites, not one scene
            raise UserError(
                f"--scene {args.scene}: the model was trained on the temporal set {temporal!r}, which needs "
                "pre/post-event composites (Sen12Landslides patches), not a single-date scene"
            )
        result = run_scene(cfg, tracking_uri=uri, log=progress_printer(args.json))
    if args.json:
        print_summary({"run_id": run.info.run_id, **result.summary}, as_json=True)
    else:
        print(f"{scene_summary_line(result)}; run {run.info.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
