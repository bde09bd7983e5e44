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

from dataclasses import dataclass
from pathlib import Path

from common.cli import RunOptions, UserError, positive_int
from common.options import arg, fill, nested
from fusion.choices import Policy
from pipelines._command import Command, Context
from pipelines._segmenter_args import EngineOptions
from service.config import AssessConfig

EXPERIMENT = "assess"
_D = AssessConfig()


@dataclass
class RegionOptions:
    """regions (one of)"""

    lat: float | None = arg("latitude of a point (degrees)", default=None)
    lon: float | None = arg("longitude of a point (degrees)", default=None)
    radius_m: float = arg("radius around the point, m", default=_D.radius_m)
    bbox: list[float] | None = arg(
        "a box: west, south, east, north (degrees)", default=None, nargs=4, metavar=("W", "S", "E", "N")
    )
    regions: str | None = arg("polygons (GeoJSON, GeoPackage, shapefile; any CRS)", default=None)


@dataclass
class ImageryOptions:
    """imagery"""

    date: str = arg("YYYY-MM-DD: the latest imagery date to use")
    days_before: int = arg("search window before --date", default=_D.days_before)
    scene: str | None = arg("a scene on disk: band folder, .SAFE, GeoTIFF (--bands) or item", default=None)
    bands: list[str] | None = arg("band order of a multi-band GeoTIFF --scene", default=None)
    items: str | None = arg("saved STAC item(s) to pick the scene from", default=None)
    stac_url: str | None = arg("a STAC API to search (e.g. Earth Search v1)", default=None)
    max_cloud: float = arg("largest cloud cover % of a STAC item", default=_D.max_cloud)
    dem: str | None = arg("DEM GeoTIFF (any CRS) for models that use slope/DEM", default=None)


@dataclass
class ChangeOptions:
    """change evidence (with --event-date; from --items or --stac-url, as map_event)"""

    event_date: str | None = arg(
        "YYYY-MM-DD: add the change evidence of composites before and after this date (needs --dem)", default=None
    )
    pre_days: int = arg("pre-event window, days (default %(default)s)", default=_D.pre_days, type=positive_int)
    post_days: int = arg(
        "post-event window, days, cut at --date (default %(default)s)", default=_D.post_days, type=positive_int
    )
    change_max_cloud: float = arg(
        "largest eo:cloud_cover of an item in the change composites, % (map_event's --max-cloud; default %(default)s)",
        default=_D.change_max_cloud,
    )


@dataclass(kw_only=True)
class AssessOptions:
    """The flags of ``python -m pipelines.assess`` (logged as the run's ``config.json``; keyword-only: ``--out``
    keeps its place in ``--help`` among the flags with defaults)."""

    factors: list[str] = arg("factor rasters: NAME=path or path (name = file stem)", default_factory=list, nargs="*")
    tabular_model: str | None = arg("tabular model URI", default=None)
    imagery_model: str | None = arg(
        "segmenter URI (runs:/..., models:/NAME@ALIAS, folder or .onnx); with no model named at all the "
        "@champion of landslide-imagery (and of landslide-tabular / landslide-fuser where registered) is used",
        default=None,
    )
    fusion_model: str | None = arg("fuser URI (else --policy decides)", default=None)
    policy: Policy | None = arg(
        "decision policy (default: stacked with a fuser, else any, or the one model given)", default=None
    )
    out: str = arg("output folder")
    device: str = arg("auto, cpu or cuda", default=_D.device)
    threshold: float | None = arg("override the segmenter's threshold", default=None)
    min_area_m2: float = arg("smallest landslide polygon kept", default=_D.min_area_m2)
    tile: int = arg("tile size of the segmenter, px (default %(default)s)", default=_D.tile, type=positive_int)
    allow_resolution_mismatch: bool = arg(
        "run even when the scene's pixel size is more than 1.5x off the model's training GSD (a warning)",
        default=False,
    )
    max_area_km2: float = arg("largest region accepted", default=_D.max_area_km2)
    progress: bool = arg("no progress bar", default=True, flag="--no-progress")
    where: RegionOptions = nested(RegionOptions)
    imagery: ImageryOptions = nested(ImageryOptions)
    change: ChangeOptions = nested(ChangeOptions)
    engine: EngineOptions = nested(EngineOptions)
    run: RunOptions = nested(RunOptions)


def config_from_args(o: AssessOptions, **models: str | None) -> AssessConfig:
    """The library's config for these options (``models``: the resolved model URIs); the checks of the API's
    requests (:func:`service.regions.check_values`) and the change plan run first, before a run is opened."""
    from service.regions import CLI_NAMES, check_values  # noqa: PLC0415 - shapely/GDAL load when the command runs

    w, im, ch = o.where, o.imagery, o.change
    check_values(date=im.date, days_before=im.days_before, radius_m=w.radius_m, scene=im.scene, names=CLI_NAMES)
    if ch.event_date is not None:  # before a run is opened: the one check of service.assess
        from service.assess import event_plan  # noqa: PLC0415 - loaded when the command runs: --help stays fast

        event_plan(
            AssessConfig(
                date=im.date,
                event_date=ch.event_date,
                pre_days=ch.pre_days,
                post_days=ch.post_days,
                change_max_cloud=ch.change_max_cloud,
                dem=im.dem,
                scene=im.scene,
            )
        )
    fusion_model = models.get("fusion_model", o.fusion_model)
    if o.policy == "stacked" and not fusion_model:
        raise UserError("--policy stacked needs --fusion-model; or pick another --policy")
    return fill(AssessConfig, o, w, im, ch, o.run, factors=list(o.factors), runtime=o.engine.spec(), **models)


def library_config(o: AssessOptions, ctx: Context) -> AssessConfig:
    """Resolve the models (``@champion`` where none is named) and build the library's config (logged as params)."""
    from pipelines._register import model_or_champion  # noqa: PLC0415 - MLflow loads when the command runs

    none_named = o.imagery_model is None and o.tabular_model is None and o.fusion_model is None
    if o.imagery_model is None and not none_named:
        raise UserError("--imagery-model is needed with --tabular-model/--fusion-model (or name no model: @champion)")
    models = {
        "imagery_model": model_or_champion(o.imagery_model, "imagery", "--imagery-model", required=True, log=ctx.log)
    }
    for name, kind in (("tabular_model", "tabular"), ("fusion_model", "fusion")):
        given = getattr(o, name)
        if given is not None or none_named:
            option = f"--{name.replace('_', '-')}"
            models[name] = model_or_champion(given, kind, option, required=False, log=ctx.log)
    return config_from_args(o, **models)


def run(o: AssessOptions, ctx: Context) -> dict[str, object]:
    """Assess the regions (:func:`service.assess.assess`); the summary holds each region's decision."""
    import pandas as pd  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from service.assess import assess  # noqa: PLC0415 - torch and GDAL load when the command runs

    result = ctx.result = assess(ctx.config, tracking_uri=ctx.tracking_uri, log=ctx.log)
    table = result.regions
    verdicts = {str(r.region_id): ("unknown" if pd.isna(r.decision) else int(r.decision)) for r in table.itertuples()}
    out = Path(result.out)
    files = sorted(str(p) for p in out.iterdir() if p.is_file()) if out.is_dir() else []
    return {
        "run_id": ctx.run_id,
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
        "files": files,
    }


COMMAND = Command("assess", AssessOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=library_config)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
