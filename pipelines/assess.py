"""``python -m pipelines.assess``: a region's landslide verdict from its coordinates and a date.

Per region: the imagery evidence (the segmenter over the Sentinel-2 scene cut to the region), the
tabular evidence (the factor rasters' zonal means), the fused probability, the decision, whether the
models agree and why, and the landslide polygons; written to ``--out`` as ``regions.geojson``,
``landslides.geojson``, ``probability.tif``, ``report.html`` (self-contained, opens offline) and
``report.json``, and logged as an MLflow run. See :mod:`service.assess` for every rule.

Examples::

    python -m pipelines.assess --lat 46.62 --lon 13.85 --radius-m 800 --date 2024-06-20 --scene S2_folder/ \\
        --dem dem.tif --factors slope_deg=slope.tif rain_7d_mm=rain.tif ... \\
        --tabular-model runs:/<tab>/model --imagery-model runs:/<img> --fusion-model runs:/<fus> --out report/
    python -m pipelines.assess --bbox 13.80 46.60 13.90 46.65 --date 2024-06-20 \\
        --stac-url https://earth-search.aws.element84.com/v1 --imagery-model model.onnx --out report/
    # with change evidence (a third evidence: composites before and after the event, as map_event makes them)
    python -m pipelines.assess --bbox 11.57 44.32 11.59 44.34 --date 2023-06-30 --event-date 2023-05-16 \\
        --items items.json --dem dem.tif --imagery-model runs:/<img> --out report/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.cli import UserError, add_common_args, csv_list, positive_int, print_summary, progress_printer, run_main
from common.seed import seed_everything
from fusion.choices import POLICIES
from pipelines._register import model_or_champion
from pipelines._segmenter_args import add_engine_args, engine_spec_of
from service.config import AssessConfig

EXPERIMENT = "assess"


def build_parser() -> argparse.ArgumentParser:
    d = AssessConfig()
    p = argparse.ArgumentParser(prog="python -m pipelines.assess", description=__doc__.split("\n\n")[0])
    where = p.add_argument_group("regions (one of)")
    where.add_argument("--lat", type=float, default=None, help="latitude of a point (degrees)")
    where.add_argument("--lon", type=float, default=None, help="longitude of a point (degrees)")
    where.add_argument("--radius-m", type=float, default=d.radius_m, help="radius around the point, m")
    where.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"), default=None)
    where.add_argument("--regions", default=None, help="polygons (GeoJSON, GeoPackage, shapefile; any CRS)")
    when = p.add_argument_group("imagery")
    when.add_argument("--date", required=True, help="YYYY-MM-DD: the latest imagery date to use")
    when.add_argument("--days-before", type=int, default=d.days_before, help="search window before --date")
    when.add_argument("--scene", default=None, help="a scene on disk: band folder, .SAFE, GeoTIFF (--bands) or item")
    when.add_argument("--bands", type=csv_list, default=None, help="band order of a multi-band GeoTIFF --scene")
    when.add_argument("--items", default=None, help="saved STAC item(s) to pick the scene from")
    when.add_argument("--stac-url", default=None, help="a STAC API to search (e.g. Earth Search v1)")
    when.add_argument("--max-cloud", type=float, default=d.max_cloud, help="largest cloud cover %% of a STAC item")
    when.add_argument("--dem", default=None, help="DEM GeoTIFF (any CRS) for models that use slope/DEM")
    change = p.add_argument_group("change evidence (with --event-date; from --items or --stac-url, as map_event)")
    change.add_argument(
        "--event-date",
        default=None,
        help="YYYY-MM-DD: add the change evidence of composites before and after this date (needs --dem)",
    )
    change.add_argument(
        "--pre-days", type=positive_int, default=d.pre_days, help="pre-event window, days (default %(default)s)"
    )
    change.add_argument(
        "--post-days",
        type=positive_int,
        default=d.post_days,
        help="post-event window, days, cut at --date (default %(default)s)",
    )
    p.add_argument("--factors", nargs="*", default=[], help="factor rasters: NAME=path or path (name = file stem)")
    p.add_argument("--tabular-model", default=None, help="tabular model URI")
    p.add_argument(
        "--imagery-model",
        default=None,
        help="segmenter URI (runs:/..., models:/NAME@ALIAS, folder or .onnx); with no model named at all the "
        "@champion of landslide-imagery (and of landslide-tabular / landslide-fuser where registered) is used",
    )
    p.add_argument("--fusion-model", default=None, help="fuser URI (else --policy decides)")
    p.add_argument(
        "--policy",
        default=None,
        choices=POLICIES,
        help="decision policy (default: stacked with a fuser, else any, or the one model given)",
    )
    p.add_argument("--out", required=True, help="output folder")
    add_engine_args(p)
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--threshold", type=float, default=None, help="override the segmenter's threshold")
    p.add_argument("--min-area-m2", type=float, default=d.min_area_m2, help="smallest landslide polygon kept")
    p.add_argument(
        "--tile", type=positive_int, default=d.tile, help="tile size of the segmenter, px (default %(default)s)"
    )
    p.add_argument(
        "--allow-resolution-mismatch",
        action="store_true",
        help="run even when the scene's pixel size is more than 1.5x off the model's training GSD (a warning)",
    )
    p.add_argument("--max-area-km2", type=float, default=d.max_area_km2, help="largest region accepted")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> AssessConfig:
    # the same check as the API's (service.regions.check_values), before a run is opened
    from service.regions import CLI_NAMES, check_values  # noqa: PLC0415 - shapely/GDAL load when the command runs

    check_values(
        date=args.date, days_before=args.days_before, radius_m=args.radius_m, scene=args.scene, names=CLI_NAMES
    )
    if args.event_date is not None:  # before a run is opened: the one check of service.assess
        from service.assess import event_plan  # noqa: PLC0415 - loaded when the command runs: --help stays fast

        event_plan(
            AssessConfig(
                date=args.date,
                event_date=args.event_date,
                pre_days=args.pre_days,
                post_days=args.post_days,
                dem=args.dem,
                scene=args.scene,
            )
        )
    if args.policy == "stacked" and not args.fusion_model:
        raise UserError("--policy stacked needs --fusion-model; or pick another --policy")
    return AssessConfig(
        date=args.date,
        regions=args.regions,
        lat=args.lat,
        lon=args.lon,
        radius_m=args.radius_m,
        bbox=args.bbox,
        days_before=args.days_before,
        scene=args.scene,
        bands=args.bands,
        items=args.items,
        stac_url=args.stac_url,
        max_cloud=args.max_cloud,
        dem=args.dem,
        factors=list(args.factors),
        tabular_model=args.tabular_model,
        imagery_model=args.imagery_model,
        fusion_model=args.fusion_model,
        out=args.out,
        policy=args.policy,
        runtime=engine_spec_of(args),
        device=args.device,
        threshold=args.threshold,
        min_area_m2=args.min_area_m2,
        tile=args.tile,
        allow_resolution_mismatch=args.allow_resolution_mismatch,
        max_area_km2=args.max_area_km2,
        progress=not args.no_progress,
        seed=args.seed,
        event_date=args.event_date,
        pre_days=args.pre_days,
        post_days=args.post_days,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import pandas as pd  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.tracking import setup_tracking, tracked_run  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from service.assess import assess  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    uri = setup_tracking(args.tracking_uri, verbose=args.verbose)
    log = progress_printer(args.json)
    none_named = args.imagery_model is None and args.tabular_model is None and args.fusion_model is None
    if args.imagery_model is None and not none_named:
        raise UserError("--imagery-model is needed with --tabular-model/--fusion-model (or name no model: @champion)")
    args.imagery_model = model_or_champion(args.imagery_model, "imagery", "--imagery-model", required=True, log=log)
    for flag, kind in (("tabular_model", "tabular"), ("fusion_model", "fusion")):
        given = getattr(args, flag)
        if given is not None or none_named:
            option = f"--{flag.replace('_', '-')}"
            setattr(args, flag, model_or_champion(given, kind, option, required=False, log=log))
    cfg = config_from_args(args)
    seed_everything(cfg.seed)
    with tracked_run(args.experiment or EXPERIMENT, cfg, run_name=args.run_name) as run:
        result = assess(cfg, tracking_uri=uri, log=log)
    table = result.regions
    verdicts = {str(r.region_id): ("unknown" if pd.isna(r.decision) else int(r.decision)) for r in table.itertuples()}
    print_summary(
        {
            "run_id": run.info.run_id,
            "out": str(result.out),
            "report": str(result.out / "report.html"),
            "regions": len(table),
            "landslides": result.report["landslides"],
            "decisions": verdicts,
            **(
                {"change": dict(zip(table["region_id"].astype(str), table["change"], strict=True))}
                if "change" in table
                else {}
            ),
        },
        as_json=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
