"""``python -m pipelines.map_event``: an area and an event date in, the event's landslide inventory out.

Training-free change evidence: every Sentinel-2 L2A item over the area in ``[event - pre-days, event)`` and
``(event, event + post-days]`` (saved items ``--items``, whose hrefs may be local band files, or a STAC API
``--stac-url``; all tiles the area touches), cloud-masked (SCL) median composites before and after on the area's
UTM grid at 10 m with clear-observation counts, NDVI / dNDVI / HazMapper's rdNDVI / bare-soil change, slope from
``--dem``, and the documented detector of ``imagery.change.detector`` (vegetation loss on a slope where there
was vegetation). ``--susceptibility`` (a ``predict_tabular --raster-out`` COG) is fused per pixel by the rule of
``fusion.change_fusion``. Without ``--imagery-model`` no trained segmenter is used: the inventory comes from change
evidence alone (and the command says so). ``--imagery-model URI`` (``runs:/...``, ``models:/NAME@ALIAS``, a folder)
runs a segmenter on the post-event composite (a single-date model: the bands it was trained on) or on both
composites (a model trained with ``train_imagery --temporal pre-post|pre-post-diff``), only on the tiles where the
change score or the susceptibility passes the segmenter gate (``imagery.change.segmenter``: defaults and reasons;
``--gate-score``, ``--gate-susceptibility``, ``--gate-min-pixels``, ``--no-gate``); the share of tiles skipped is
logged and reported. Its probability is ``segmenter.tif``, ``p_segmenter`` per polygon, and is fused by the rule
of ``fusion.change_fusion`` (``--segmenter-weight``). The model's fit to the scene is checked by the functions
``predict_scene`` uses (``imagery.inference.fitness``): before any work, the event grid's pixel size against the
model's training GSD (refused past 1.5x either way unless ``--allow-resolution-mismatch``, which warns) and a
synthetic-data model on real items (warns; the items are synthetic only when every one says so); after the blocks,
the domain of the channels it was fed (sampled in every block, combined here: the same on both engines) and the
share of observed pixels it flags (warns above 10 %). Scores and warnings go to ``summary.json``
(``segmenter.model_fit``, ``warnings``), ``report.html`` and the MLflow run's metrics.

Writes into ``--out`` (all at once, or nothing): ``pre.tif``, ``post.tif``, ``change.tif``, ``probability.tif``,
``landslides.gpkg`` (layers ``landslides`` and ``rejected``: the candidates the cross-checks turned down, vegetation
loss on flat ground and segmenter-only scars, with their reasons), ``landslides.geojson``, ``rejected.geojson``,
``summary.json``, ``report.html``; logs them to an MLflow run.
The area is cut into ``--block`` px blocks, each a task: ``--engine local`` runs them here, ``--engine dask`` on a
local Dask cluster (``--workers``) or a running one (``--scheduler``), with identical results; finished blocks
are cached beside ``--out`` (``.<out>.blocks``, removed on success) and ``--resume`` skips them after a kill
when no input or setting changed. ``--reference mask.tif`` also scores the map (ROC-AUC, object recall;
``imagery.change.validation``).

Example::

    python -m pipelines.map_event --bbox 11.80 44.20 11.90 44.26 --event-date 2023-05-16 --out event/ \\
        --items items.json --dem dem.tif --pre-days 90 --post-days 45
    # with a segmenter trained on pre/post composites (train_imagery --temporal pre-post), on the gated tiles only
    python -m pipelines.map_event ... --imagery-model models:/landslide-imagery@champion [--no-gate]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from common.cli import RunOptions, UserError, positive_int
from common.options import arg, nested, to_dict
from imagery.change.defaults import MAX_CLOUD, POST_DAYS, PRE_DAYS, S2_FIRST_DATE
from imagery.data.choices import DEFAULT_COLLECTION, DEFAULT_STAC_URL
from imagery.inference.config import TtaMode
from pipelines._command import Command, Context
from pipelines._segmenter_args import EngineOptions

if TYPE_CHECKING:
    from imagery.change.acquisition import EventWindows
    from imagery.change.detector import DetectorParams
    from imagery.change.event import EventConfig
    from imagery.change.segmenter import SegmenterSettings

EXPERIMENT = "event-map"
#: Largest area mapped in one run, km2 (memory: about 40 bytes per 10 m pixel, i.e. 200 MB at 500 km2).
MAX_AREA_KM2 = 500.0
#: The defaults of ``imagery.change.detector.DetectorParams``, ``imagery.change.segmenter.GateParams`` and
#: ``SegmenterSettings`` (written here so that --help loads no NumPy; a test checks they agree).
_DETECTOR = {"min_ndvi_loss": 0.1, "min_slope_deg": 10.0, "min_pre_ndvi": 0.2, "min_clear": 1}
_GATE = {"score_floor": 0.25, "susceptibility_floor": 0.5, "min_pixels": 5}
_SEGMENTER = {"weight": 0.5, "batch_size": 8, "device": "auto"}


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


@dataclass(kw_only=True)
class MapEventOptions:
    """The flags of ``python -m pipelines.map_event`` (logged as the run's ``config.json``; keyword-only: the
    required flags keep their place in ``--help``). One of ``--bbox``/``--aoi``, of ``--items``/``--stac-url`` and
    of ``--dem``/``--dem-collection`` is required (checked before the run opens)."""

    bbox: list[float] | None = arg("area, degrees", default=None, nargs=4, metavar=("W", "S", "E", "N"), type=float)
    aoi: str | None = arg("area as a vector file (any CRS; its bounding box is mapped)", default=None)
    event_date: str = arg("the trigger's date, YYYY-MM-DD")
    out: str = arg("output folder")
    pre_days: int = arg("pre-event window, days (default %(default)s)", default=PRE_DAYS, type=positive_int)
    post_days: int = arg("post-event window, days (default %(default)s)", default=POST_DAYS, type=positive_int)
    items: str | None = arg("saved STAC ItemCollection JSON (hrefs may be local band files)", default=None)
    stac_url: str | None = arg(f"STAC API to search (e.g. {DEFAULT_STAC_URL})", default=None)
    stac_timeout: float = arg("seconds to wait for the STAC API (default 60)", default=60.0, type=_float)
    collection: str = arg("STAC collection (default %(default)s)", default=DEFAULT_COLLECTION)
    dem: str | None = arg("DEM raster covering the area (any CRS), for slope", default=None)
    dem_collection: str | None = arg("with --stac-url: DEM collection over the area (cop-dem-glo-30)", default=None)
    susceptibility: str | None = arg("susceptibility COG (0..1) fused per pixel", default=None)
    susceptibility_weight: float = arg("fusion weight 0..1 (default 0.5)", default=0.5, type=_float)
    susceptibility_prior: float = arg("prior the change score assumes (%(default)s)", default=0.5, type=_float)
    max_cloud: float = arg("largest item eo:cloud_cover, % (default %(default)s)", default=MAX_CLOUD, type=_float)
    max_area_km2: float = arg("largest area mapped, km2 (default %(default)s)", default=MAX_AREA_KM2, type=_float)
    min_area_m2: float = arg("smallest polygon kept, m2 (default 500)", default=500.0, type=_float)
    block: int = arg("block size, pixels (default 512)", default=512, type=positive_int)
    min_ndvi_loss: float = arg("detector: NDVI loss (%(default)s)", default=_DETECTOR["min_ndvi_loss"], type=_float)
    min_slope_deg: float = arg(
        "detector: slope, degrees (%(default)s)", default=_DETECTOR["min_slope_deg"], type=_float
    )
    min_pre_ndvi: float = arg("detector: NDVI before (%(default)s)", default=_DETECTOR["min_pre_ndvi"], type=_float)
    min_clear: int = arg(
        "detector: clear views per window (%(default)s)", default=_DETECTOR["min_clear"], type=positive_int
    )
    engine: Literal["local", "dask"] = arg("where blocks run (default local)", default="local")
    scheduler: str | None = arg("with --engine dask: scheduler address (default: local cluster)", default=None)
    workers: int = arg("local Dask cluster: worker processes (default 2)", default=2, type=positive_int)
    resume: bool = arg("reuse the finished blocks of a killed run (same inputs)", default=False)
    reference: str | None = arg("reference landslide mask raster (0/1) to score the map", default=None)
    imagery_model: str | None = arg(
        "segmenter URI (runs:/<run_id>, models:/NAME@ALIAS, a folder); default: none, change evidence alone",
        default=None,
    )
    segmenter_weight: float = arg(
        "fusion weight of the segmenter (%(default)s)", default=_SEGMENTER["weight"], type=_float
    )
    gate_score: float = arg("gate: change score floor (%(default)s)", default=_GATE["score_floor"], type=_float)
    gate_susceptibility: float = arg(
        "gate: susceptibility floor (%(default)s)", default=_GATE["susceptibility_floor"], type=_float
    )
    gate_min_pixels: int = arg("gate: passing pixels (%(default)s)", default=_GATE["min_pixels"], type=positive_int)
    no_gate: bool = arg("run the segmenter on every observed tile", default=False)
    batch_size: int = arg("segmenter tiles per pass (%(default)s)", default=_SEGMENTER["batch_size"], type=positive_int)
    device: str = arg("segmenter device: cuda, cpu or auto (default auto)", default=_SEGMENTER["device"])
    tta: TtaMode | None = arg("segmenter test-time augmentation (default: stored)", default=None)
    allow_resolution_mismatch: bool = arg(
        "run a segmenter whose training GSD is over 1.5x from the event grid's pixel size anyway (warns)",
        default=False,
    )
    inference: EngineOptions = nested(EngineOptions)
    run: RunOptions = nested(RunOptions)


def _one_of(o: MapEventOptions, *names: str) -> None:
    """Exactly one of the flags ``names`` (as argparse's mutually exclusive groups said it)."""
    given = [n for n in names if getattr(o, n) is not None]
    flags = ["--" + n.replace("_", "-") for n in names]
    if not given:
        raise UserError(f"one of the arguments {' '.join(flags)} is required")
    if len(given) > 1:
        raise UserError(
            f"argument --{given[1].replace('_', '-')}: not allowed with argument --{given[0].replace('_', '-')}"
        )


def _bbox(o: MapEventOptions) -> tuple[float, float, float, float]:
    from common.geo import read_vector  # noqa: PLC0415 - GDAL loads when the command runs
    from imagery.data.stac import check_bbox  # noqa: PLC0415 - loaded when the command runs

    if o.bbox:
        return check_bbox(o.bbox)
    data = read_vector(o.aoi, to_crs="EPSG:4326")
    bounds = [g.bounds for g in data.geometries if g is not None and not g.is_empty]
    if not bounds:
        raise UserError(f"--aoi {o.aoi}: no geometry")
    w, s, e, n = (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )
    return check_bbox([w, s, e, n])


@dataclass
class Plan:
    """What the flags come to, checked before a run is opened: the area, the event and the library settings."""

    bbox: tuple[float, float, float, float]
    event: dt.date
    km2: float
    detector: DetectorParams
    seg_cfg: SegmenterSettings
    cfg: EventConfig

    def params(self, o: MapEventOptions) -> dict[str, Any]:
        """The run's params: every flag by its name, the area's box and its size."""
        data = to_dict(o)
        flat = {k: v for k, v in data.items() if k not in ("inference", "run")}
        return {**flat, **data["inference"], **data["run"], "bbox": list(self.bbox), "area_km2": round(self.km2, 4)}


def plan(o: MapEventOptions) -> Plan:
    """Check the flags across each other and build the library's settings (one-line errors, no run opened)."""
    from imagery.change.acquisition import (  # noqa: PLC0415 - loaded when the command runs
        area_km2,
        check_cloud_limit,
        parse_date,
    )
    from imagery.change.detector import DetectorParams  # noqa: PLC0415 - loaded when the command runs
    from imagery.change.event import EventConfig  # noqa: PLC0415 - loaded when the command runs
    from imagery.change.segmenter import GateParams, SegmenterSettings  # noqa: PLC0415 - loaded when the command runs

    _one_of(o, "bbox", "aoi")
    _one_of(o, "items", "stac_url")
    _one_of(o, "dem", "dem_collection")
    for flag in ("aoi", "items", "dem", "susceptibility", "reference"):
        value = getattr(o, flag)
        if value and not Path(value).is_file():
            raise UserError(f"--{flag} {value}: file not found")
    if not o.max_area_km2 > 0:
        raise UserError(f"--max-area-km2 {o.max_area_km2:g}: expected a positive area, km2")
    if not o.min_area_m2 >= 0:
        raise UserError(f"--min-area-m2 {o.min_area_m2:g}: expected an area of 0 m2 or more")
    if not o.stac_timeout > 0:
        raise UserError(f"--stac-timeout {o.stac_timeout:g}: expected a positive number of seconds")
    check_cloud_limit(o.max_cloud, "--max-cloud")
    if o.scheduler and o.engine != "dask":
        raise UserError(f"--scheduler {o.scheduler}: runs blocks on a Dask cluster; add --engine dask")
    bbox = _bbox(o)
    event = parse_date(o.event_date)
    today = dt.datetime.now(dt.UTC).date()
    if event >= today:
        raise UserError(f"--event-date {event}: not in the past (today is {today}); no post-event image exists yet")
    if event <= S2_FIRST_DATE:
        raise UserError(f"--event-date {event}: no Sentinel-2 imagery before {S2_FIRST_DATE}; expected a later date")
    km2 = area_km2(bbox)
    if km2 > o.max_area_km2:
        raise UserError(f"area {km2:.1f} km2 is over --max-area-km2 {o.max_area_km2:g}; map it in parts")
    if not 0 <= o.susceptibility_weight <= 1 or not 0 < o.susceptibility_prior < 1:
        raise UserError("--susceptibility-weight must be in 0..1 and --susceptibility-prior in (0, 1)")
    out = Path(o.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    try:
        detector = DetectorParams(
            min_ndvi_loss=o.min_ndvi_loss,
            min_slope_deg=o.min_slope_deg,
            min_pre_ndvi=o.min_pre_ndvi,
            min_clear=o.min_clear,
        )
    except ValueError as exc:
        raise UserError(f"detector settings: {exc}") from None
    if o.dem_collection and not o.stac_url:
        raise UserError("--dem-collection searches a STAC API; use it with --stac-url (or give --dem)")
    try:
        gate = GateParams(
            score_floor=o.gate_score,
            susceptibility_floor=o.gate_susceptibility,
            min_pixels=o.gate_min_pixels,
            enabled=not o.no_gate,
        )
    except ValueError as exc:
        raise UserError(f"segmenter gate: {exc}") from None
    if not 0 <= o.segmenter_weight <= 1:
        raise UserError(f"--segmenter-weight must be in 0..1, got {o.segmenter_weight:g}")
    seg_cfg = SegmenterSettings(
        model=o.imagery_model,
        weight=o.segmenter_weight,
        batch_size=o.batch_size,
        device=o.device,
        runtime=o.inference.spec(),
        tta=o.tta,
        allow_resolution_mismatch=o.allow_resolution_mismatch,
    )
    cfg = EventConfig(
        bbox=bbox,
        dem=o.dem or "",
        susceptibility=o.susceptibility,
        min_area_m2=o.min_area_m2,
        block=o.block,
        detector=detector,
        gate=gate,
    )
    return Plan(bbox, event, km2, detector, seg_cfg, cfg)


class PlannedParams(dict[str, Any]):
    """The run's params (logged as they are: a mapping) and, in :attr:`plan`, the :class:`Plan` they come from, so
    that :func:`run` uses the plan checked before the run opened instead of planning (reading ``--aoi``) again."""

    def __init__(self, planned: Plan, o: MapEventOptions) -> None:
        super().__init__(planned.params(o))
        self.plan = planned


def logged(o: MapEventOptions, ctx: Context) -> PlannedParams:
    """The checks of :func:`plan`, before the run opens; the run's params (every flag, the area's box and size)
    carrying the plan to :func:`run`."""
    return PlannedParams(plan(o), o)


def _fetch_dem(o: MapEventOptions, bbox: tuple[float, float, float, float], out: Path) -> str:
    """Mosaic ``--dem-collection`` over the area (padded: the UTM grid's corners reach past the lon/lat box) into a
    hidden file beside ``--out`` (kept after a crash or kill for ``--resume``, removed after success or bad input)."""
    from imagery.data.stac import fetch_dem, search_items  # noqa: PLC0415 - GDAL loads when the command runs

    w, s, e, n = bbox
    pad_x, pad_y = 0.05 * (e - w) + 0.001, 0.05 * (n - s) + 0.001
    box = (w - pad_x, s - pad_y, e + pad_x, n + pad_y)
    path = _leftovers(o)[1]
    if not (o.resume and path.is_file()):
        dem_items = search_items(o.stac_url, o.dem_collection, box, timeout_s=o.stac_timeout)
        fetch_dem(dem_items, box, path, collection=o.dem_collection)
    return str(path)


def _segmenter(
    settings: SegmenterSettings,
    tracking_uri: str | None,
    windows: EventWindows,
    bbox: tuple[float, float, float, float],
    where: str,
    min_area_m2: float,
    log: Callable[[str], None],
) -> tuple[Any, dict[str, Any]]:
    """The ``--imagery-model`` runner and the fitness checks made before any block runs
    (``imagery.inference.fitness``: resolution on the event grid, training data), or ``(None, {})``. The warnings
    are kept in ``model_fit["warnings"]``."""
    if not settings.model:
        log("no --imagery-model: the inventory comes from change evidence alone")
        return None, {}
    from common.registry import resolve_version  # noqa: PLC0415 - MLflow loads only with a model
    from imagery.change.acquisition import output_grid, synthetic_scene  # noqa: PLC0415 - loaded when it runs
    from imagery.change.segmenter import check_bands  # noqa: PLC0415 - loaded when the command runs
    from imagery.inference.event import EventSegmenter  # noqa: PLC0415 - torch loads only with a model
    from imagery.inference.fitness import (  # noqa: PLC0415 - torch loads only with a model
        check_resolution,
        check_training_data,
        recording,
        scene_pixel_m,
    )

    segment = EventSegmenter(
        settings.model,
        tracking_uri=tracking_uri,
        device=settings.device,
        runtime=settings.runtime,
        batch_size=settings.batch_size,
        tta=settings.tta,
    )
    meta = segment.segmenter.meta
    grid = output_grid(bbox)
    notes: list[str] = []
    with recording(notes):
        fit = check_resolution(
            scene_pixel_m(grid),
            meta,
            allow=settings.allow_resolution_mismatch,
            source=f"of the event (its {grid.crs} grid)",
            model=settings.model,
            min_area_m2=min_area_m2,
        )
        fit["training_data"] = check_training_data(meta, scene_synthetic=synthetic_scene(windows), model=settings.model)
    fit["warnings"] = notes
    check_bands(windows, segment.bands, pre=segment.needs_pre, where=where)
    registered = resolve_version(settings.model, tracking_uri=tracking_uri)
    if registered:
        fit["registered"] = f"{registered[0]} version {registered[1]}"
    inputs = "pre- and post-event composites" if segment.needs_pre else "the post-event composite"
    kind = f"temporal set {segment.temporal}" if segment.temporal else "single-date"
    which = f"{settings.model}: {fit['registered']}" if registered else settings.model
    log(f"segmenter {which} ({kind}, weights {segment.digest[:12]}) runs on {inputs}, gated tiles only")
    return segment, fit


def _fit_after(segment: Any, fit: dict[str, Any], result: Any, model: str) -> dict[str, float]:
    """The fitness checks made from what the blocks saw (``imagery.inference.fitness``, as ``predict_scene`` makes
    them): the domain of the channels the segmenter was fed, sampled in every block, and the share of observed
    pixels it flags (probability at or above its threshold); into ``fit``, warnings included. Returns the MLflow
    metrics of ``fit`` (``fitness.fit_metrics``)."""
    from imagery.inference.fitness import (  # noqa: PLC0415 - torch loads only with a model
        DomainCheck,
        check_flagged_share,
        fit_metrics,
        recording,
    )

    grid, s = result.grid, result.summary
    domain = DomainCheck(segment.model_bands, segment.segmenter.meta.band_stats, grid.width * grid.height)
    if result.domain_sample is not None:
        domain.add_sample(result.domain_sample)
    with recording(fit.setdefault("warnings", [])):
        domain.record(fit, model)
        fit["flagged_share"] = check_flagged_share(s["segmenter"]["flagged_pixels"], s["observed_pixels"])
    return fit_metrics(fit)


def _engine_summary(segment: Any) -> dict[str, Any]:
    from imagery.inference.engine import log_engine_summary  # noqa: PLC0415 - torch loads only with a model

    return log_engine_summary(segment.segmenter)


def _leftovers(o: MapEventOptions) -> list[Path]:
    """What a run keeps beside ``--out`` for ``--resume``: the block cache and a fetched ``--dem-collection`` DEM."""
    out = Path(o.out).absolute()
    return [out.parent / f".{out.name}.blocks", out.parent / f".{out.name}.dem.tif"]


def run(o: MapEventOptions, ctx: Context) -> dict[str, object]:
    """:func:`_run`; a bad input (``UserError``) leaves nothing behind, a crash or a kill keeps :func:`_leftovers`
    for ``--resume``."""
    import shutil  # noqa: PLC0415 - loaded when the command runs

    try:
        return _run(o, ctx)
    except UserError:
        cache, dem = _leftovers(o)
        shutil.rmtree(cache, ignore_errors=True)
        dem.unlink(missing_ok=True)
        raise


def _run(o: MapEventOptions, ctx: Context) -> dict[str, object]:
    """Select the observations, map the event (:func:`imagery.change.event.map_event`) into ``--out`` at once,
    score it against ``--reference`` and log it all."""
    import json  # noqa: PLC0415 - loaded when the command runs
    import shutil  # noqa: PLC0415 - loaded when the command runs
    from functools import partial  # noqa: PLC0415 - loaded when the command runs

    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.atomic import atomic_dir  # noqa: PLC0415 - loaded when the command runs
    from common.fingerprint import fingerprint_files  # noqa: PLC0415 - loaded when the command runs
    from common.tracking import log_fingerprint  # noqa: PLC0415 - MLflow loads when the command runs
    from fusion.change_fusion import fuse_change  # noqa: PLC0415 - loaded when the command runs
    from imagery.change.acquisition import select_observations  # noqa: PLC0415 - loaded when the command runs
    from imagery.change.event import map_event  # noqa: PLC0415 - GDAL loads when the command runs
    from imagery.change.inventory import rejected_line  # noqa: PLC0415 - loaded when the command runs
    from imagery.change.report import write_report  # noqa: PLC0415 - loaded when the command runs
    from imagery.change.validation import score_against_reference  # noqa: PLC0415 - loaded when the command runs
    from imagery.data.stac import load_items, search_items  # noqa: PLC0415 - loaded when the command runs

    # planned once, before the run opened (``logged``); a caller's own ``config`` (Command.call) plans here
    p = ctx.config.plan if isinstance(ctx.config, PlannedParams) else plan(o)
    bbox, event, km2, seg_cfg, cfg = p.bbox, p.event, p.km2, p.seg_cfg, p.cfg
    log = ctx.log
    out = Path(o.out)
    if o.items:
        items, where = load_items(o.items), o.items
    else:
        start = (event - dt.timedelta(days=o.pre_days)).isoformat()
        end = (event + dt.timedelta(days=o.post_days)).isoformat()
        items = search_items(o.stac_url, o.collection, bbox, start, end, timeout_s=o.stac_timeout)
        where = str(o.stac_url)
    windows = select_observations(items, bbox, event, o.pre_days, o.post_days, max_cloud=o.max_cloud, where=where)
    log(f"{len(windows.pre)} item(s) before, {len(windows.post)} after the event of {event}; {km2:.2f} km2")
    # the model's checks before any work (a refused model leaves nothing behind, not even a fetched DEM)
    segment, model_fit = _segmenter(seg_cfg, ctx.tracking_uri, windows, bbox, where, o.min_area_m2, log)
    if o.items:
        log_fingerprint(fingerprint_files([o.items, o.dem], source=o.items), context="event")
    else:
        if o.dem_collection:
            cfg = dataclasses.replace(cfg, dem=_fetch_dem(o, bbox, out))
        log_fingerprint(fingerprint_files([cfg.dem], source=o.stac_url), context="event")
    fuse, fuse_settings = None, None
    if o.susceptibility or segment is not None:
        fuse = partial(
            fuse_change,
            weight=o.susceptibility_weight,
            prior=o.susceptibility_prior,
            segmenter_weight=seg_cfg.weight,
        )
        fuse_settings = {"weight": o.susceptibility_weight, "prior": o.susceptibility_prior}
        if segment is not None:
            fuse_settings["segmenter_weight"] = seg_cfg.weight
    cache_dir = out.absolute().parent / f".{out.name}.blocks"
    fit_logged: dict[str, float] = {}  # the model's fitness scores, as predict_scene logs them
    with atomic_dir(out) as staging:  # the outputs appear all together, or not at all
        result = ctx.result = map_event(
            windows,
            cfg,
            staging,
            fuse=fuse,
            fuse_settings=fuse_settings,
            segment=segment,
            engine=o.engine,
            scheduler=o.scheduler,
            workers=o.workers,
            cache_dir=cache_dir,
            resume=o.resume,
            progress=log if o.run.verbose else lambda _m: None,
        )
        if segment is not None:
            fit_logged = _fit_after(segment, model_fit, result, str(seg_cfg.model))
            result.summary["segmenter"]["model_fit"] = model_fit
            result.summary["warnings"] = list(model_fit["warnings"])
            result.summary["segmenter"]["engine"] = _engine_summary(segment)
            sg = result.summary["segmenter"]
            log(
                f"segmenter gate: the model ran on {sg['tiles_run']} of {sg['tiles_total']} tiles "
                f"({sg['skipped_share']:.0%} skipped, {sg['seconds']:.1f} s)"
            )
        if o.reference:
            result.summary["validation"] = score_against_reference(staging, result.grid, o.reference, result.features)
        (staging / "summary.json").write_text(json.dumps(result.summary, indent=1, default=str), encoding="utf-8")
        write_report(staging, result.grid, result.features, result.summary, rejected=result.rejected)
    shutil.rmtree(cache_dir, ignore_errors=True)  # finished: the block cache is no longer needed
    if o.dem_collection:
        Path(cfg.dem).unlink(missing_ok=True)
    s = result.summary
    mlflow.log_metrics(
        {"n_landslides": s["n_landslides"], "detected_area_m2": s["detected_area_m2"], **s["timings"]}
        | {"n_rejected": s["n_rejected"]}
        | {f"rejected_{k}": v for k, v in s["rejected"].items()}
        | fit_logged
        | {f"unobserved_{k}": v for k, v in s["unobserved_share"].items()}
        | {k: v for k, v in s.get("validation", {}).items() if isinstance(v, int | float)}
        | (
            {f"segmenter_{k}": s["segmenter"][k] for k in ("tiles_run", "tiles_skipped", "skipped_share")}
            if segment is not None
            else {}
        )
    )
    names = ["summary.json", "report.html", "landslides.geojson", "landslides.gpkg", "rejected.geojson"]
    names.append("probability.tif")
    for name in [*names, *(["segmenter.tif"] if segment is not None else [])]:
        mlflow.log_artifact(str(out / name))
    files = sorted(str(f) for f in out.iterdir() if f.is_file()) if out.is_dir() else []
    return {
        "run_id": ctx.run_id,
        "out": str(out),
        "landslides": s["n_landslides"],
        "rejected": rejected_line(s["rejected"]),
        "detected_area_m2": s["detected_area_m2"],
        "items_pre": len(windows.pre),
        "items_post": len(windows.post),
        "blocks_resumed": s["blocks_resumed"],
        **{k: v for k, v in s.get("validation", {}).items()},
        "segmenter": "none (change evidence alone)"
        if segment is None
        else f"{seg_cfg.model} on {s['segmenter']['tiles_run']}/{s['segmenter']['tiles_total']} tiles "
        f"({s['segmenter']['skipped_share']:.0%} skipped by the gate)",
        "files": files,
    }


COMMAND = Command("map_event", MapEventOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=logged)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
