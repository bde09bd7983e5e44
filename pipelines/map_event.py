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
of ``fusion.change_fusion`` (``--segmenter-weight``). The model's fitness is checked as in ``predict_scene``
(a training resolution far from 10 m is refused, a synthetic-data model warns).

Writes into ``--out`` (all at once, or nothing): ``pre.tif``, ``post.tif``, ``change.tif``, ``probability.tif``,
``landslides.gpkg``, ``landslides.geojson``, ``summary.json``, ``report.html``; logs them to an MLflow run.
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
import datetime as dt
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import mlflow

from common.atomic import atomic_dir
from common.cli import UserError, add_common_args, positive_int, print_summary, progress_printer, run_main
from common.fingerprint import fingerprint_files
from common.geo import read_vector
from common.registry import resolve_version
from common.seed import seed_everything
from common.tracking import log_fingerprint, setup_tracking, tracked_run
from fusion.change_fusion import fuse_change
from imagery.change.acquisition import RESOLUTION_M, EventWindows, area_km2, parse_date, select_observations
from imagery.change.defaults import MAX_CLOUD, POST_DAYS, PRE_DAYS
from imagery.change.detector import DetectorParams
from imagery.change.event import EventConfig, map_event
from imagery.change.report import write_report
from imagery.change.segmenter import GateParams, SegmenterSettings, check_bands
from imagery.change.validation import score_against_reference
from imagery.data.stac import (
    DEFAULT_COLLECTION,
    DEFAULT_STAC_URL,
    check_bbox,
    fetch_dem,
    load_items,
    search_items,
)
from imagery.inference.config import TTA_MODES
from pipelines._segmenter_args import add_engine_args, engine_spec_of

EXPERIMENT = "event-map"
#: Largest area mapped in one run, km2 (memory: about 40 bytes per 10 m pixel, i.e. 200 MB at 500 km2).
MAX_AREA_KM2 = 500.0


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    d = DetectorParams()
    p = argparse.ArgumentParser(prog="python -m pipelines.map_event", description=__doc__.split("\n\n")[0])
    area = p.add_mutually_exclusive_group(required=True)
    area.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"), help="area, degrees")
    area.add_argument("--aoi", help="area as a vector file (any CRS; its bounding box is mapped)")
    p.add_argument("--event-date", required=True, help="the trigger's date, YYYY-MM-DD")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--pre-days", type=positive_int, default=PRE_DAYS, help="pre-event window, days (default %(default)s)"
    )
    p.add_argument(
        "--post-days", type=positive_int, default=POST_DAYS, help="post-event window, days (default %(default)s)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--items", help="saved STAC ItemCollection JSON (hrefs may be local band files)")
    src.add_argument("--stac-url", help=f"STAC API to search (e.g. {DEFAULT_STAC_URL})")
    p.add_argument("--stac-timeout", type=_float, default=60.0, help="seconds to wait for the STAC API (default 60)")
    p.add_argument("--collection", default=DEFAULT_COLLECTION, help="STAC collection (default %(default)s)")
    dem = p.add_mutually_exclusive_group(required=True)
    dem.add_argument("--dem", help="DEM raster covering the area (any CRS), for slope")
    dem.add_argument("--dem-collection", help="with --stac-url: DEM collection over the area (cop-dem-glo-30)")
    p.add_argument("--susceptibility", default=None, help="susceptibility COG (0..1) fused per pixel")
    p.add_argument("--susceptibility-weight", type=_float, default=0.5, help="fusion weight 0..1 (default 0.5)")
    p.add_argument("--susceptibility-prior", type=_float, default=0.5, help="prior the change score assumes (0.5)")
    p.add_argument(
        "--max-cloud", type=_float, default=MAX_CLOUD, help="largest item eo:cloud_cover, %% (default %(default)s)"
    )
    p.add_argument(
        "--max-area-km2", type=_float, default=MAX_AREA_KM2, help="largest area mapped, km2 (default %(default)s)"
    )
    p.add_argument("--min-area-m2", type=_float, default=500.0, help="smallest polygon kept, m2 (default 500)")
    p.add_argument("--block", type=positive_int, default=512, help="block size, pixels (default 512)")
    p.add_argument("--min-ndvi-loss", type=_float, default=d.min_ndvi_loss, help="detector: NDVI loss (0.10)")
    p.add_argument("--min-slope-deg", type=_float, default=d.min_slope_deg, help="detector: slope, degrees (10)")
    p.add_argument("--min-pre-ndvi", type=_float, default=d.min_pre_ndvi, help="detector: NDVI before (0.20)")
    p.add_argument("--min-clear", type=positive_int, default=d.min_clear, help="detector: clear views per window (1)")
    p.add_argument("--engine", choices=["local", "dask"], default="local", help="where blocks run (default local)")
    p.add_argument("--scheduler", default=None, help="with --engine dask: scheduler address (default: local cluster)")
    p.add_argument("--workers", type=positive_int, default=2, help="local Dask cluster: worker processes (default 2)")
    p.add_argument("--resume", action="store_true", help="reuse the finished blocks of a killed run (same inputs)")
    p.add_argument("--reference", default=None, help="reference landslide mask raster (0/1) to score the map")
    g, s = GateParams(), SegmenterSettings()
    p.add_argument(
        "--imagery-model",
        default=None,
        help="segmenter URI (runs:/<run_id>, models:/NAME@ALIAS, a folder); default: none, change evidence alone",
    )
    p.add_argument("--segmenter-weight", type=_float, default=s.weight, help="fusion weight of the segmenter (0.5)")
    p.add_argument("--gate-score", type=_float, default=g.score_floor, help="gate: change score floor (0.25)")
    p.add_argument(
        "--gate-susceptibility", type=_float, default=g.susceptibility_floor, help="gate: susceptibility floor (0.5)"
    )
    p.add_argument("--gate-min-pixels", type=positive_int, default=g.min_pixels, help="gate: passing pixels (5)")
    p.add_argument("--no-gate", action="store_true", help="run the segmenter on every observed tile")
    p.add_argument("--batch-size", type=positive_int, default=s.batch_size, help="segmenter tiles per pass (8)")
    p.add_argument("--device", default=s.device, help="segmenter device: cuda, cpu or auto (default auto)")
    p.add_argument("--tta", choices=TTA_MODES, default=None, help="segmenter test-time augmentation (default: stored)")
    p.add_argument(
        "--allow-resolution-mismatch", action="store_true", help="run a model trained far from 10 m anyway (warns)"
    )
    add_engine_args(p)
    add_common_args(p)
    return p


def _bbox(args: argparse.Namespace) -> tuple[float, float, float, float]:
    if args.bbox:
        return check_bbox(args.bbox)
    data = read_vector(args.aoi, to_crs="EPSG:4326")
    bounds = [g.bounds for g in data.geometries if g is not None and not g.is_empty]
    if not bounds:
        raise UserError(f"--aoi {args.aoi}: no geometry")
    w, s, e, n = (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )
    return check_bbox([w, s, e, n])


def _fetch_dem(args: argparse.Namespace, bbox: tuple[float, float, float, float], out: Path) -> str:
    """Mosaic ``--dem-collection`` over the area (padded: the UTM grid's corners reach past the lon/lat box) into a
    hidden file beside ``--out`` (kept after a failure for ``--resume``, removed after success)."""
    w, s, e, n = bbox
    pad_x, pad_y = 0.05 * (e - w) + 0.001, 0.05 * (n - s) + 0.001
    box = (w - pad_x, s - pad_y, e + pad_x, n + pad_y)
    path = out.absolute().parent / f".{out.name}.dem.tif"
    if not (args.resume and path.is_file()):
        dem_items = search_items(args.stac_url, args.dem_collection, box, timeout_s=args.stac_timeout)
        fetch_dem(dem_items, box, path, collection=args.dem_collection)
    return str(path)


def _segmenter(
    settings: SegmenterSettings,
    tracking_uri: str | None,
    windows: EventWindows,
    items: Sequence[dict],
    where: str,
    min_area_m2: float,
    log: Callable[[str], None],
) -> tuple[Any, dict[str, Any]]:
    """The ``--imagery-model`` runner and its fitness checks (``imagery.inference.fitness``), or ``(None, {})``."""
    if not settings.model:
        log("no --imagery-model: the inventory comes from change evidence alone")
        return None, {}
    from imagery.inference.event import EventSegmenter  # noqa: PLC0415 - torch loads only with a model
    from imagery.inference.fitness import check_resolution, check_training_data  # noqa: PLC0415 - with a model

    segment = EventSegmenter(
        settings.model,
        tracking_uri=tracking_uri,
        device=settings.device,
        runtime=settings.runtime,
        batch_size=settings.batch_size,
        tta=settings.tta,
    )
    meta = segment.segmenter.meta
    fit = check_resolution(
        RESOLUTION_M,
        meta,
        allow=settings.allow_resolution_mismatch,
        source=f"the event composites ({RESOLUTION_M:g} m grid)",
        model=settings.model,
        min_area_m2=min_area_m2,
    )
    synthetic = any(bool((it.get("properties") or {}).get("synthetic")) for it in items)
    fit["training_data"] = check_training_data(meta, scene_synthetic=synthetic, model=settings.model)
    check_bands(windows, segment.bands, pre=segment.needs_pre, where=where)
    registered = resolve_version(settings.model, tracking_uri=tracking_uri)
    if registered:
        fit["registered"] = f"{registered[0]} version {registered[1]}"
    inputs = "pre- and post-event composites" if segment.needs_pre else "the post-event composite"
    kind = f"temporal set {segment.temporal}" if segment.temporal else "single-date"
    which = f"{settings.model}: {fit['registered']}" if registered else settings.model
    log(f"segmenter {which} ({kind}, weights {segment.digest[:12]}) runs on {inputs}, gated tiles only")
    return segment, fit


def _engine_summary(segment: Any) -> dict[str, Any]:
    from imagery.inference.engine import log_engine_summary  # noqa: PLC0415 - torch loads only with a model

    return log_engine_summary(segment.segmenter)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bbox = _bbox(args)
    event = parse_date(args.event_date)
    today = dt.datetime.now(dt.UTC).date()
    if event >= today:
        raise UserError(f"--event-date {event}: not in the past (today is {today}); no post-event image exists yet")
    km2 = area_km2(bbox)
    if km2 > args.max_area_km2:
        raise UserError(f"area {km2:.1f} km2 is over --max-area-km2 {args.max_area_km2:g}; map it in parts")
    for flag in ("dem", "susceptibility", "reference"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            raise UserError(f"--{flag} {value}: file not found")
    if not 0 <= args.susceptibility_weight <= 1 or not 0 < args.susceptibility_prior < 1:
        raise UserError("--susceptibility-weight must be in 0..1 and --susceptibility-prior in (0, 1)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    try:
        detector = DetectorParams(
            min_ndvi_loss=args.min_ndvi_loss,
            min_slope_deg=args.min_slope_deg,
            min_pre_ndvi=args.min_pre_ndvi,
            min_clear=args.min_clear,
        )
    except ValueError as exc:
        raise UserError(f"detector settings: {exc}") from None
    if args.dem_collection and not args.stac_url:
        raise UserError("--dem-collection searches a STAC API; use it with --stac-url (or give --dem)")
    try:
        gate = GateParams(
            score_floor=args.gate_score,
            susceptibility_floor=args.gate_susceptibility,
            min_pixels=args.gate_min_pixels,
            enabled=not args.no_gate,
        )
    except ValueError as exc:
        raise UserError(f"segmenter gate: {exc}") from None
    if not 0 <= args.segmenter_weight <= 1:
        raise UserError(f"--segmenter-weight must be in 0..1, got {args.segmenter_weight:g}")
    seg_cfg = SegmenterSettings(
        model=args.imagery_model,
        weight=args.segmenter_weight,
        batch_size=args.batch_size,
        device=args.device,
        runtime=engine_spec_of(args),
        tta=args.tta,
        allow_resolution_mismatch=args.allow_resolution_mismatch,
    )
    cfg = EventConfig(
        bbox=bbox,
        dem=args.dem or "",
        susceptibility=args.susceptibility,
        min_area_m2=args.min_area_m2,
        block=args.block,
        detector=detector,
        gate=gate,
    )
    config = {**vars(args), "bbox": list(bbox), "area_km2": round(km2, 4)}
    seed_everything(args.seed)
    tracking_uri = setup_tracking(args.tracking_uri, verbose=args.verbose)
    log = progress_printer(args.json)
    with tracked_run(args.experiment or EXPERIMENT, config, run_name=args.run_name) as run:
        if args.items:
            items, where = load_items(args.items), args.items
            log_fingerprint(fingerprint_files([args.items, args.dem], source=args.items), context="event")
        else:
            start = (event - dt.timedelta(days=args.pre_days)).isoformat()
            end = (event + dt.timedelta(days=args.post_days)).isoformat()
            items = search_items(args.stac_url, args.collection, bbox, start, end, timeout_s=args.stac_timeout)
            where = args.stac_url
            if args.dem_collection:
                cfg = replace(cfg, dem=_fetch_dem(args, bbox, out))
            log_fingerprint(fingerprint_files([cfg.dem], source=args.stac_url), context="event")
        windows = select_observations(
            items, bbox, event, args.pre_days, args.post_days, max_cloud=args.max_cloud, where=where
        )
        log(f"{len(windows.pre)} item(s) before, {len(windows.post)} after the event of {event}; {km2:.2f} km2")
        segment, model_fit = _segmenter(seg_cfg, tracking_uri, windows, items, where, args.min_area_m2, log)
        fuse, fuse_settings = None, None
        if args.susceptibility or segment is not None:
            fuse = partial(
                fuse_change,
                weight=args.susceptibility_weight,
                prior=args.susceptibility_prior,
                segmenter_weight=seg_cfg.weight,
            )
            fuse_settings = {"weight": args.susceptibility_weight, "prior": args.susceptibility_prior}
            if segment is not None:
                fuse_settings["segmenter_weight"] = seg_cfg.weight
        cache_dir = out.absolute().parent / f".{out.name}.blocks"
        with atomic_dir(out) as staging:  # the outputs appear all together, or not at all
            result = map_event(
                windows,
                cfg,
                staging,
                fuse=fuse,
                fuse_settings=fuse_settings,
                segment=segment,
                engine=args.engine,
                scheduler=args.scheduler,
                workers=args.workers,
                cache_dir=cache_dir,
                resume=args.resume,
                progress=log if args.verbose else lambda _m: None,
            )
            if segment is not None:
                result.summary["segmenter"]["model_fit"] = model_fit
                result.summary["segmenter"]["engine"] = _engine_summary(segment)
                sg = result.summary["segmenter"]
                log(
                    f"segmenter gate: the model ran on {sg['tiles_run']} of {sg['tiles_total']} tiles "
                    f"({sg['skipped_share']:.0%} skipped, {sg['seconds']:.1f} s)"
                )
            if args.reference:
                result.summary["validation"] = score_against_reference(
                    staging, result.grid, args.reference, result.features
                )
            (staging / "summary.json").write_text(json.dumps(result.summary, indent=1, default=str), encoding="utf-8")
            write_report(staging, result.grid, result.features, result.summary)
        shutil.rmtree(cache_dir, ignore_errors=True)  # finished: the block cache is no longer needed
        if args.dem_collection:
            Path(cfg.dem).unlink(missing_ok=True)
        s = result.summary
        mlflow.log_metrics(
            {"n_landslides": s["n_landslides"], "detected_area_m2": s["detected_area_m2"], **s["timings"]}
            | {f"unobserved_{k}": v for k, v in s["unobserved_share"].items()}
            | {k: v for k, v in s.get("validation", {}).items() if isinstance(v, int | float)}
            | (
                {f"segmenter_{k}": s["segmenter"][k] for k in ("tiles_run", "tiles_skipped", "skipped_share")}
                if segment is not None
                else {}
            )
        )
        names = ["summary.json", "report.html", "landslides.geojson", "landslides.gpkg", "probability.tif"]
        for name in [*names, *(["segmenter.tif"] if segment is not None else [])]:
            mlflow.log_artifact(str(out / name))
    line = {
        "run_id": run.info.run_id,
        "out": str(out),
        "landslides": s["n_landslides"],
        "detected_area_m2": s["detected_area_m2"],
        "items_pre": len(windows.pre),
        "items_post": len(windows.post),
        "blocks_resumed": s["blocks_resumed"],
        **{k: v for k, v in s.get("validation", {}).items()},
        "segmenter": "none (change evidence alone)"
        if segment is None
        else f"{seg_cfg.model} on {s['segmenter']['tiles_run']}/{s['segmenter']['tiles_total']} tiles "
        f"({s['segmenter']['skipped_share']:.0%} skipped by the gate)",
    }
    print_summary(line, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
