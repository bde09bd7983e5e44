"""Assess regions from their coordinates: imagery, factor rasters and both models fused, per region.

:func:`assess` (``python -m pipelines.assess``, and every ``/v1/assess`` job of the service):

1. **Regions** (:mod:`service.regions`): a circle around a point, a box, or polygons in any CRS; each
   with an id; at most ``max_area_km2`` each (true area).
2. **Scene**: a local scene (band folder, ``.SAFE``, multi-band GeoTIFF, STAC item) cut to the regions'
   box plus ``margin_m`` (:func:`imagery.data.crop.crop_scene`), or the least-cloudy Sentinel-2 item of a
   STAC API / saved items between ``date - days_before`` and ``date`` covering the box
   (:mod:`imagery.data.stac`).
3. **Imagery evidence**: the segmenter over the cut scene (:func:`imagery.inference.scene.run_scene`:
   windowed, clouds and nodata masked from SCL), then per region the features ``fusion`` defines on the
   region's pixels with a known probability (:func:`fusion.region_features.masked_region_features`). A
   region whose pixels are all clouded or nodata has no imagery evidence (fallback: tabular, marked).
   Shares are of the region's whole area (:mod:`common.geo.zonal`): the part outside the scene is missing.
4. **Tabular evidence**: the tabular model's features as **zonal means** of the factor rasters over the
   region's cells (each raster warped onto the scene grid, bilinear; a factor named ``NAME=path`` or by
   its file stem). This matches a model trained on region tables whose features are region means (the
   main job's); a cell-level susceptibility model sees the region's mean conditions. A region that a
   factor raster covers for less than half of its cells (those outside the scene included) has no tabular
   evidence (fallback: imagery, marked).
5. **Change evidence** (only with ``event_date``): the items of ``[event - pre_days, event)`` and
   ``(event, min(event + post_days, date)]`` over the regions, from the same saved items / STAC API as the
   scene (:func:`imagery.change.acquisition.select_observations`, as ``map_event``), composited and run
   through the training-free detector with the DEM's slope, per region
   (:func:`imagery.change.region.region_change_features`: flagged share, mean dNDVI on slopes, clear views).
   A single ``scene`` (one date) cannot give it: an error. Without ``event_date`` this step does not run.
6. **Fusion**: :meth:`fusion.scoring.RegionScorer.score_evidence`, the one fused row of ``/v1/score`` too
   (stacker or decision policy, thresholds and the default policy of :mod:`fusion.models`, the cross-check
   of :mod:`fusion.crosscheck`, and the change rule :class:`fusion.models.ChangeRule` for the third
   evidence): fused probability, decision, agreement, reason; the top SHAP features.

Outputs (in ``out``): ``regions.geojson`` (regions with every score), ``regions.gpkg`` (the same in the
scene's CRS, styled by decision for QGIS in its ``layer_styles`` table), ``landslides.geojson`` (detected
polygons inside the regions, EPSG:4326, with the region id), ``probability.tif`` (the cut scene's
probability COG), ``report.html`` (one self-contained page: map of regions and polygons over the
scene's RGB, scores, reasons, SHAP features; Leaflet inlined, so it opens offline), ``report.json``,
``scene_rgb.png`` and ``overview.png``. Everything is written in a staging folder and moved in at the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import shapely

from common.atomic import atomic_dir, atomic_write
from common.cancel import check_cancelled
from common.errors import UserError
from common.geo import (
    ClientSources,
    Feature,
    Grid,
    RasterOnGrid,
    ZonalRaster,
    buffer_m,
    client_reads,
    geodesic_area_m2,
    regions_by_decision_qml,
    transform_geometries,
    write_geojson,
    write_gpkg,
    zone_of,
)
from fusion.models import Models
from fusion.region_features import IMAGERY_FEATURES, masked_region_features
from fusion.scoring import RegionScorer, ScoringConfig
from imagery.change.defaults import MAX_CLOUD, POST_DAYS, PRE_DAYS
from imagery.data.crop import crop_scene
from imagery.data.sentinel2 import open_scene
from imagery.data.stac import load_items, pick_item, search_items, write_box
from imagery.inference.config import SceneConfig
from imagery.inference.scene import run_scene
from service.config import AssessConfig, ServiceConfig
from service.regions import (
    API_NAMES,
    CLI_NAMES,
    MAX_DAYS_BEFORE,
    Region,
    bounds,
    box,
    check_regions,
    check_values,
    circle,
    from_request,
    parse_date,
    read_regions,
)
from service.report import report_warnings, write_report, write_rgb_png
from service.security import check_stac_url, client_message

WGS84 = "EPSG:4326"


@dataclass(frozen=True)
class AssessResult:
    """What :func:`assess` made: the output folder, the per-region table, and the report dict."""

    out: Path
    regions: pd.DataFrame
    report: dict[str, Any]


def regions_of(cfg: AssessConfig) -> list[Region]:
    """The regions of ``cfg`` (exactly one way of giving them), checked against ``max_area_km2``."""
    given = [
        k
        for k, v in (
            ("--regions", cfg.regions),
            ("--lat/--lon", cfg.lat is not None or cfg.lon is not None),
            ("--bbox", cfg.bbox),
            ("region", cfg.region_geojson),
        )
        if v
    ]
    if len(given) != 1:
        raise UserError(f"give exactly one of --lat/--lon, --bbox or --regions; got {', '.join(given) or 'none'}")
    if cfg.regions:
        regions = read_regions(cfg.regions)
    elif cfg.region_geojson:
        regions = from_request({"region": cfg.region_geojson})
    elif cfg.bbox:
        regions = [box(cfg.bbox)]
    else:
        if cfg.lat is None or cfg.lon is None:
            raise UserError("--lat and --lon go together")
        regions = [circle(cfg.lat, cfg.lon, cfg.radius_m)]
    check_regions(regions, cfg.max_area_km2)
    return regions


def date_window(date: str, days_before: int) -> tuple[str, str]:
    """``(start, end)`` dates (YYYY-MM-DD): ``days_before`` days before ``date``, and ``date``; not in the future."""
    day = parse_date(date, "--date")
    return (day - dt.timedelta(days=int(days_before))).isoformat(), day.isoformat()


def _padded(box_lonlat: Sequence[float], margin_m: float) -> list[float]:
    """``box_lonlat`` (W S E N) grown by ``margin_m`` metres on the ground, within the lon/lat ranges."""
    w, s, e, n = buffer_m(shapely.box(*box_lonlat), WGS84, margin_m).bounds
    return [max(-180.0, w), max(-90.0, s), min(180.0, e), min(90.0, n)]


def acquire_scene(
    cfg: AssessConfig,
    box_lonlat: list[float],
    window: tuple[str, str],
    folder: Path,
    log: Callable[[str], None],
    sources: ClientSources | None = None,
) -> tuple[Path, list[str]]:
    """The scene cut to ``box_lonlat`` in ``folder`` and notes (e.g. a scene date outside ``window``).

    ``sources`` (the service): where the scene's rasters may be read from and how (every raster opened
    while acquiring is checked, :mod:`common.geo.client`); ``None``: the command's own files, unchecked.
    """
    if sources is None:
        return _acquire(cfg, box_lonlat, window, folder, log, None)
    with client_reads(sources):
        return _acquire(cfg, box_lonlat, window, folder, log, list(sources.hosts))


def _acquire(
    cfg: AssessConfig,
    box_lonlat: list[float],
    window: tuple[str, str],
    folder: Path,
    log: Callable[[str], None],
    hosts: list[str] | None,
) -> tuple[Path, list[str]]:
    start, end = window
    notes: list[str] = []
    sources = [k for k, v in (("--scene", cfg.scene), ("--items", cfg.items), ("--stac-url", cfg.stac_url)) if v]
    if len(sources) != 1:
        raise UserError(f"give exactly one of --scene, --items or --stac-url; got {', '.join(sources) or 'none'}")
    if cfg.scene:
        scene = open_scene(cfg.scene, bands=cfg.bands)
        if scene.date and not (start <= scene.date[:10] <= end):
            notes.append(f"the scene is dated {scene.date[:10]}, outside {start}..{end}")
        box_text = " ".join(f"{v:.4f}" for v in box_lonlat)
        log(f"cutting scene {scene.scene_id} ({scene.date or 'date unknown'}) to {box_text}")
        return crop_scene(scene, box_lonlat, folder), notes
    where = cfg.items or cfg.stac_url or ""
    items = (
        load_items(cfg.items)
        if cfg.items
        else search_items(
            cfg.stac_url or "", cfg.collection, box_lonlat, start, end, timeout_s=cfg.http_timeout_s, hosts=hosts
        )
    )
    item = pick_item(items, box_lonlat, start=start, end=end, max_cloud=cfg.max_cloud, where=where)
    log(f"item {item.get('id')} ({str((item.get('properties') or {}).get('datetime', ''))[:10]})")
    box_dir = write_box(item, box_lonlat, folder, source=where, log=lambda _line: None, timeout_s=cfg.http_timeout_s)
    return box_dir, notes


@dataclass(frozen=True)
class EventPlan:
    """The change evidence's dates: the event and the windows' lengths (``post_days`` cut at ``date``)."""

    event: dt.date
    pre_days: int
    post_days: int


def event_plan(cfg: AssessConfig) -> EventPlan | None:
    """The checked event of ``cfg`` (``None`` without ``event_date``); one-line errors name the flags.

    The event date is a date from Sentinel-2's first (2015-06-23) to today, before ``date`` (the latest
    imagery date, which ends the post-event window); the windows 1..365 days; the item cloud limit
    ``change_max_cloud`` 0..100 %; a DEM (the detector's slope) and a time series (``items`` or ``stac_url``: a
    single ``scene`` has one date) are needed.
    """
    if cfg.event_date is None:
        return None
    from imagery.change.acquisition import check_cloud_limit  # noqa: PLC0415 - only with an event date

    check_cloud_limit(cfg.change_max_cloud, "--change-max-cloud")
    event = parse_date(cfg.event_date, "--event-date")
    day = parse_date(cfg.date, "--date")
    for flag, value in (("--pre-days", cfg.pre_days), ("--post-days", cfg.post_days)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= MAX_DAYS_BEFORE:
            raise UserError(f"{flag} {value!r}: expected a whole number of days, 1 to {MAX_DAYS_BEFORE}")
    if event >= day:
        raise UserError(
            f"--event-date {event}: expected a date before --date {day} (the latest imagery date ends the "
            "post-event window)"
        )
    if not cfg.dem:
        raise UserError("--event-date needs --dem: the change detector works on slopes")
    if cfg.scene:
        raise UserError("--event-date needs images before and after the event: give --items or --stac-url, not --scene")
    return EventPlan(event, int(cfg.pre_days), min(int(cfg.post_days), (day - event).days))


def change_evidence(
    cfg: AssessConfig,
    plan: EventPlan,
    regions: Sequence[Region],
    box_lonlat: list[float],
    log: Callable[[str], None],
    sources: ClientSources | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per region the change features (:data:`imagery.change.region.REGION_CHANGE_FEATURES`), and what the
    report says about them (windows, acquisitions, rule). The items come from ``cfg.items`` or ``cfg.stac_url``
    (searched over both windows, on the allowed hosts only with ``sources``); their band files are read
    under ``sources`` (the service), the DEM is the operator's."""
    from imagery.change.acquisition import select_observations  # noqa: PLC0415 - only with an event date
    from imagery.change.composite import acquisitions  # noqa: PLC0415
    from imagery.change.region import REGION_CHANGE_FEATURES, region_change_features  # noqa: PLC0415

    where = cfg.items or cfg.stac_url or ""
    start = (plan.event - dt.timedelta(days=plan.pre_days)).isoformat()
    end = (plan.event + dt.timedelta(days=plan.post_days)).isoformat()
    if cfg.items:
        items = load_items(cfg.items)
    else:
        hosts = list(sources.hosts) if sources is not None else None
        items = search_items(
            cfg.stac_url or "", cfg.collection, box_lonlat, start, end, timeout_s=cfg.http_timeout_s, hosts=hosts
        )
    windows = select_observations(
        items,
        box_lonlat,
        plan.event,
        plan.pre_days,
        plan.post_days,
        max_cloud=cfg.change_max_cloud,
        where=where,
        cloud_flag="--change-max-cloud",
    )
    pre_dates = [g[0].date.isoformat() for g in acquisitions(windows.pre)]
    post_dates = [g[0].date.isoformat() for g in acquisitions(windows.post)]
    log(f"change: {len(pre_dates)} acquisition(s) before, {len(post_dates)} after the event of {plan.event}")
    reads = (lambda: client_reads(sources)) if sources is not None else contextlib.nullcontext
    t0 = time.perf_counter()
    rows, grid = region_change_features(
        windows,
        [r.geometry for r in regions],
        str(cfg.dem),
        ids=[r.id for r in regions],
        reads=reads,
        check=check_cancelled,
    )
    summary = {
        "event_date": plan.event.isoformat(),
        "windows": {
            "pre": [windows.pre_start.isoformat(), windows.pre_end.isoformat()],
            "post": [windows.post_start.isoformat(), windows.post_end.isoformat()],
        },
        "acquisitions": {"pre": pre_dates, "post": post_dates},
        "items": {"pre": len(windows.pre), "post": len(windows.post)},
        "grid_crs": grid.crs,
        "max_cloud": cfg.change_max_cloud,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return pd.DataFrame(rows, columns=list(REGION_CHANGE_FEATURES)), summary


def factor_sources(factors: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in factors:
        name, _, path = spec.partition("=") if "=" in spec else (Path(spec).stem, "", spec)
        if not Path(path).is_file():
            raise UserError(f"--factors {spec}: raster not found: {path}")
        if name in out:
            raise UserError(f"--factors: two rasters named {name!r}; name them NAME=path")
        out[name] = path
    return out


def region_evidence(
    regions: Sequence[Region],
    prob_path: Path,
    threshold: float,
    factors: dict[str, str],
    features: list[str],
    categorical: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Per region: the imagery features, the tabular feature row and a note.

    Every share is of the region's whole area (:mod:`common.geo.zonal`): the part outside the scene counts
    as missing, like a cloud. Imagery: the features of the region's pixels with a known probability.
    Tabular: zonal means of the factor rasters (bilinear onto the probability grid); a ``categorical``
    feature is the majority class (nearest), named by the raster's ``CLASSES`` tag when it has one, else
    the class code itself (as ``pipelines.build_table`` writes them). A factor known on less than half of
    the region leaves the whole row empty (no tabular evidence). Each raster is opened once for all regions.
    """
    grid = Grid.from_raster(prob_path)
    img_rows, tab_rows, notes = [], [], []
    with contextlib.ExitStack() as stack:
        prob_src = stack.enter_context(RasterOnGrid(prob_path, grid, "nearest", 1))
        readers = {
            name: stack.enter_context(ZonalRaster(factors[name], grid, name in categorical))
            for name in features
            if name in factors
        }
        absent = [name for name in features if name not in factors]
        for r in regions:
            check_cancelled()  # a service job past its timeout stops here
            note = [f"tabular missing: no factor raster for {', '.join(absent)}"] if absent else []
            zone = zone_of(grid, r.geometry, WGS84)
            img = dict.fromkeys(IMAGERY_FEATURES, np.nan)
            tab: dict[str, Any] = dict.fromkeys(features, np.nan)
            if zone.window is None:
                note.append("imagery missing: the region is outside the scene")
            else:
                prob = prob_src.read(zone.window)
                valid = zone.inside & np.isfinite(prob)
                share = zone.share(valid)
                outside = 1.0 - zone.on_grid
                if share == 0:
                    note.append("imagery missing: cloud or no data over the whole region")
                else:
                    img = masked_region_features(prob, valid, threshold, zone.pixel_area_m2(grid))
                if 0 < share < 0.999 and outside >= 0.001:
                    note.append(f"{1 - share:.0%} of the region without imagery ({outside:.0%} outside the scene)")
                elif 0 < share < 0.999:
                    note.append(f"{1 - share:.0%} of the region under cloud or nodata")
                values = {name: reader.value(zone) for name, reader in readers.items()}
                missing_cover = [name for name, v in values.items() if v is None]
                if missing_cover:
                    note.append(f"tabular missing: factor raster(s) {', '.join(missing_cover)} do not cover the region")
                else:
                    tab.update(values)
            img_rows.append(img)
            tab_rows.append(tab)
            notes.append("; ".join(note))
    return pd.DataFrame(img_rows, columns=list(IMAGERY_FEATURES)), pd.DataFrame(tab_rows, columns=features), notes


def scorer_of(models: Models | tuple[Any, Any, Any], policy: str | None = None) -> RegionScorer:
    """The fusion of ``models`` for assessed regions: ``policy`` (``None``: the models' default policy),
    the top 3 SHAP features; the same :class:`fusion.scoring.RegionScorer` rules as ``/v1/score``."""
    m = Models.of(models)
    return RegionScorer.of(m, ScoringConfig(policy=policy, write_masks=False) if policy else None)


def fuse(
    scorer: RegionScorer,
    ids: list[str],
    img: pd.DataFrame,
    tab: pd.DataFrame,
    notes: list[str],
    change: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per region: p_tabular, p_imagery, p_fused, decision, agree, evidence, reason, top_features, note and the
    imagery features, from :meth:`RegionScorer.score_evidence` (a row with an empty feature is no evidence);
    with ``change`` (the change features) also ``change``, ``change_reason`` and the ``chg_*`` features."""
    has_tab = tab.notna().all(axis=1).to_numpy()
    rows = scorer.score_evidence(ids, tab, img, notes, has_tabular=has_tab, change_features=change)
    return rows.drop(columns=["mask_path"])


def _landslides_in(regions: Sequence[Region], scene_geojson: Path) -> list[Feature]:
    """The scene's landslide polygons cut to each region (true areas recomputed for the cut part)."""
    data = json.loads(scene_geojson.read_text(encoding="utf-8"))
    out = []
    for f in data.get("features", []):
        check_cancelled()
        geom = shapely.geometry.shape(f["geometry"])
        for r in regions:
            part = geom.intersection(r.geometry)
            if part.is_empty or part.geom_type not in ("Polygon", "MultiPolygon"):
                continue
            props = {**f.get("properties", {}), "region_id": r.id, "area_m2": geodesic_area_m2(part, WGS84)}
            out.append(Feature(part, props))
    return out


def _model_thresholds(scorer: RegionScorer, has_tabular: bool) -> dict[str, float | None]:
    """The tabular and fused decision thresholds the cross-check applies, for the report (None when unused)."""
    cc = scorer.crosscheck_config
    fused = {"stacked": cc.fused_threshold, "weighted": cc.weighted_threshold}.get(cc.policy)
    return {
        "tabular_threshold": float(cc.tabular_threshold) if has_tabular else None,
        "fused_threshold": None if fused is None else float(fused),
    }


def _metric(name: str) -> str:
    """An MLflow metric name: ``evidence_both+change`` -> ``evidence_both_change``."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_")


def _json_value(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, np.integer | np.bool_):
        return v.item()
    if isinstance(v, np.floating):
        return float(v)
    return v


def assess(
    cfg: AssessConfig,
    *,
    models: Models | tuple[Any, Any, Any] | None = None,
    scorer: RegionScorer | None = None,
    tracking_uri: str | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[float, str], None] | None = None,
    sources: ClientSources | None = None,
) -> AssessResult:
    """Assess the regions of ``cfg`` (module docstring); logs to the active MLflow run when there is one.

    ``models``: loaded models (else loaded from ``cfg``'s URIs); ``scorer``: their fusion, when the caller
    keeps one (else :func:`scorer_of` ``(models, cfg.policy)``); ``sources``: where a client-chosen scene may
    be read from (the service; see :func:`acquire_scene`).
    """
    step = progress or (lambda _f, _m: None)
    t0 = time.perf_counter()
    check_values(date=cfg.date, days_before=cfg.days_before, scene=cfg.scene, names=CLI_NAMES)
    regions = regions_of(cfg)
    window = date_window(cfg.date, cfg.days_before)
    plan = event_plan(cfg)
    factors = factor_sources(cfg.factors)
    if models is None:
        models = Models.load(
            cfg.tabular_model,
            cfg.imagery_model,
            cfg.fusion_model,
            runtime=cfg.runtime,
            device=cfg.device,
            tracking_uri=tracking_uri,
        )
    models = Models.of(models)
    if models.segmenter is None:
        raise UserError("assess needs an imagery model (--imagery-model): the scene is its evidence")
    scorer = scorer or scorer_of(models, cfg.policy)  # refuses models that do not belong together
    tab_model, seg = models.tabular, models.segmenter
    features = list(getattr(tab_model, "feature_names_", []) or [])
    missing = [f for f in features if f not in factors]
    if tab_model is not None and missing and cfg.missing_factors == "error":
        raise UserError(
            f"the tabular model needs the factor rasters {', '.join(missing)}; give them with --factors NAME=path"
        )
    box_lonlat = _padded(bounds(regions), cfg.margin_m)
    if box_lonlat[2] - box_lonlat[0] > 180.0:
        raise UserError("the regions span the antimeridian (or over 180 degrees of longitude); assess each side alone")
    with atomic_dir(cfg.out) as staging, tempfile.TemporaryDirectory(prefix="assess-") as tmp:
        work = Path(tmp)
        step(0.05, "reading the scene")
        scene_dir, scene_notes = acquire_scene(cfg, box_lonlat, window, work / "scene", log, sources)
        change, change_summary = None, None
        if plan is not None:  # before the segmenter: a window without items fails at once
            step(0.1, "change evidence")
            change, change_summary = change_evidence(cfg, plan, regions, box_lonlat, log, sources)
        step(0.2, "segmenting the scene")
        scene_cfg = SceneConfig(
            scene=str(scene_dir),
            model_uri=cfg.imagery_model or "(loaded)",
            out=str(work / "pred"),
            dem=cfg.dem,
            tile=cfg.tile,
            overlap=cfg.overlap,
            batch_size=cfg.batch_size,
            device=cfg.device,
            runtime=cfg.runtime,
            min_area_m2=cfg.min_area_m2,
            threshold=cfg.threshold,
            allow_resolution_mismatch=cfg.allow_resolution_mismatch,
            log_rasters=False,
            progress=cfg.progress,
        )
        scene_res = run_scene(scene_cfg, segmenter=seg, log=log)
        threshold = float(scene_res.summary["threshold"])
        step(0.8, "region evidence and fusion")
        categorical = list(getattr(tab_model, "categorical_levels_", {}) or {})
        img, tab, notes = region_evidence(
            regions, scene_res.paths["probability.tif"], threshold, factors, features, categorical
        )
        table = fuse(scorer, [r.id for r in regions], img, tab, notes, change)
        table = pd.concat([table, tab.add_prefix("factor_")], axis=1)
        props = [{k: _json_value(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
        for p, r in zip(props, regions, strict=True):
            p["area_km2"] = round(r.area_km2, 6)
        write_geojson(
            [Feature(r.geometry, p) for r, p in zip(regions, props, strict=True)], staging / "regions.geojson", WGS84
        )
        crs = Grid.from_raster(scene_res.paths["probability.tif"]).crs  # the GeoPackage in the scene's CRS
        projected = transform_geometries([r.geometry for r in regions], WGS84, crs)
        write_gpkg(
            [Feature(g, p) for g, p in zip(projected, props, strict=True)],
            staging / "regions.gpkg",
            crs,
            layer="regions",
            style_qml=regions_by_decision_qml(),  # opens in QGIS coloured by decision
        )
        slides = _landslides_in(regions, scene_res.paths["landslides.geojson"])
        write_geojson(slides, staging / "landslides.geojson", WGS84)
        shutil.copyfile(scene_res.paths["probability.tif"], staging / "probability.tif")
        shutil.copyfile(scene_res.paths["overview.png"], staging / "overview.png")
        rgb_bounds = write_rgb_png(open_scene(scene_dir), box_lonlat, staging / "scene_rgb.png")
        summary = scene_res.summary
        report = {
            "date": cfg.date,
            "window": list(window),
            "scene": {
                k: summary.get(k)
                for k in (
                    "scene_id",
                    "date",
                    "product",
                    "crs",
                    "width",
                    "height",
                    "masked_share",
                    "bands_used",
                    "landslide_count",
                )
            },
            "scene_notes": scene_notes,
            "scene_bounds": list(rgb_bounds),
            "models": {
                "tabular": cfg.tabular_model,
                "imagery": cfg.imagery_model,
                "fusion": cfg.fusion_model,
                "policy": scorer.crosscheck_config.policy,
                "imagery_threshold": threshold,
                **_model_thresholds(scorer, tab_model is not None),
            },
            "regions": props,
            "landslides": len(slides),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        if change_summary is not None:
            rule = scorer.change_rule
            report["change"] = {**change_summary, "rule": {k: getattr(rule, k) for k in rule.__dataclass_fields__}}
        with atomic_write(staging / "report.json") as fh:
            json.dump(report, fh, indent=2, default=str)
        regions_geo = json.loads((staging / "regions.geojson").read_text(encoding="utf-8"))
        slides_geo = json.loads((staging / "landslides.geojson").read_text(encoding="utf-8"))
        write_report(staging / "report.html", report, regions_geo, slides_geo, staging / "scene_rgb.png")
        step(0.95, "writing the report")
    out = Path(cfg.out)
    if mlflow.active_run() is not None:
        evid = table["evidence"].value_counts().to_dict()
        changes = table["change"].value_counts().to_dict() if "change" in table else {}
        mlflow.log_metrics(
            {
                "regions": len(regions),
                "landslides": len(slides),
                "assess_seconds": report["seconds"],
                **{_metric(f"evidence_{k}"): float(v) for k, v in evid.items()},
                **{_metric(f"change_{k}"): float(v) for k, v in changes.items()},
            }
        )
        for name in (
            "regions.geojson",
            "regions.gpkg",
            "landslides.geojson",
            "report.html",
            "report.json",
            "overview.png",
        ):
            mlflow.log_artifact(str(out / name))
    return AssessResult(out, table, report)


# ---------------------------------------------------------------------------------------- the service
class Assessor:
    """``/v1/assess`` on the service's loaded models: requests checked at once, run as jobs.

    What a job may read (README "Security"): a scene named under ``scenes_root`` (files under it), the
    uploaded GeoTIFF, or a STAC API on the operator's allow-list and asset hrefs on its hosts; the errors it
    reports name request fields, never server paths.
    """

    def __init__(self, cfg: ServiceConfig, models: Models | tuple[Any, Any, Any]) -> None:
        self.cfg, self.models = cfg, Models.of(models)

    @cached_property
    def scorer(self) -> RegionScorer:
        """The fusion of the service's models under their default policy (built once, like ``/v1/score``'s)."""
        return scorer_of(self.models)

    def check(self, request: dict[str, Any]) -> None:
        check_regions(from_request(request), self.cfg.max_area_km2)
        given = [k for k in ("scene", "stac_url", "upload") if request.get(k) is not None]
        if len(given) > 1:
            raise UserError(f"give one of scene, stac_url or an upload; got {', '.join(given)}")
        if request.get("scene") is not None:
            check_values(date=request["date"], days_before=0, scene=request["scene"], names=API_NAMES)
            self._scene_path(str(request["scene"]))
        elif request.get("stac_url") is not None:
            check_stac_url(request["stac_url"], self.cfg.stac_hosts())
        elif not request.get("upload") and not self.cfg.stac_url:
            raise UserError("give scene (GET /v1/scenes lists them), stac_url or upload a scene")
        if request.get("event_date") is not None:
            self._check_event(request)

    def _check_event(self, request: dict[str, Any]) -> None:
        """The change evidence needs a time series (a saved item collection named as ``scene``, or a STAC API)
        and the service's DEM; the event comes before ``date``."""
        event = parse_date(request["event_date"], "event_date")
        if event >= parse_date(request["date"], "date"):
            raise UserError(f"event_date {event}: expected a date before date {request['date']}")
        if not self.cfg.dem:
            raise UserError("event_date: this service has no DEM, which the change evidence needs")
        one_date = "event_date needs images before and after the event"
        if request.get("upload"):
            raise UserError(f"{one_date}: give stac_url or a saved item collection as scene, not an upload")
        if request.get("scene") is not None and not _is_item_collection(self._scene_path(str(request["scene"]))):
            raise UserError(f"{one_date}: scene {request['scene']!r} has one date; name a saved item collection")

    def _scene_path(self, name: str) -> Path:
        if not self.cfg.scenes_root:
            raise UserError("scene: this service has no scenes; upload a scene or give stac_url")
        # A scene is named by one entry of the folder (a link to a scene elsewhere is fine);
        # names with separators or dots cannot reach outside it.
        path = Path(self.cfg.scenes_root) / name
        if name in ("", ".", "..") or Path(name).name != name or "\\" in name or not path.exists():
            raise UserError(f"scene {name!r} not found among the service's scenes")
        return path

    def scenes(self) -> list[dict[str, Any]]:
        if not self.cfg.scenes_root or not Path(self.cfg.scenes_root).is_dir():
            return []
        out = []
        for p in sorted(Path(self.cfg.scenes_root).iterdir()):
            try:
                scene = open_scene(p)
                grid = Grid.from_raster(scene.files[scene.bands[0]].path)
            except (UserError, IndexError, OSError):
                continue
            out.append({"name": p.name, "date": scene.date, "bbox": [round(v, 6) for v in grid.bounds_in(WGS84)]})
        return out

    def quicklook(self, name: str, folder: Path, max_px: int = 512) -> Path:
        """Scene ``name``'s true-colour quick-look over its whole extent (PNG on an EPSG:4326 grid, at most
        ``max_px`` a side, where ``/v1/scenes`` says its ``bbox`` is), made once into ``folder``."""
        entry = self._scene_path(name)
        path = folder / f"{name}.png"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with client_reads(self.sources({"scene": name}, folder)):
                scene = open_scene(entry)
                bbox = Grid.from_raster(scene.files[scene.bands[0]].path).bounds_in(WGS84)
                write_rgb_png(scene, bbox, path, max_px=max_px)
        return path

    def sources(self, request: dict[str, Any], folder: Path) -> ClientSources:
        """Where this request's scene may be read from (module docstring of :mod:`common.geo.client`)."""
        timeout = int(max(1, self.cfg.http_timeout_s))
        if request.get("upload"):
            return ClientSources(roots=(str(folder),), drivers=("GTiff",), http_timeout_s=timeout)
        if request.get("scene"):
            entry = self._scene_path(str(request["scene"]))
            roots = (str(self.cfg.scenes_root), os.path.realpath(entry))
            return ClientSources(hosts=tuple(self.cfg.stac_hosts()), roots=roots, http_timeout_s=timeout)
        return ClientSources(hosts=tuple(self.cfg.stac_hosts()), http_timeout_s=timeout)

    def labels(self, request: dict[str, Any], folder: Path) -> dict[str, str]:
        """Server paths of this job and what the client calls them (for :func:`service.security.client_message`)."""
        out = {str(folder / "upload.tif"): "the uploaded scene", str(folder): "the job"}
        if request.get("scene") and self.cfg.scenes_root:
            out[str(Path(self.cfg.scenes_root) / str(request["scene"]))] = f"scene {request['scene']!r}"
        for path, label in ((self.cfg.scenes_root, "the scenes folder"), (self.cfg.dem, "the service's DEM")):
            if path:
                out[str(path)] = label
        for spec in self.cfg.factors:
            name, _, path = spec.partition("=") if "=" in spec else (Path(spec).stem, "", spec)
            out[path] = f"factor raster {name}"
        return {
            **{os.path.abspath(k): v for k, v in out.items()},  # absolute forms only (see service.api)
            **{os.path.realpath(k): v for k, v in out.items()},
        }

    def run(self, request: dict[str, Any], folder: Path, progress: Callable[[float, str], None]) -> dict[str, Any]:
        try:
            return self._run(request, folder, progress)
        except UserError as exc:  # the client sees request fields, never the server's paths or flags
            raise UserError(client_message(exc, self.labels(request, folder))) from None

    def _run(self, request: dict[str, Any], folder: Path, progress: Callable[[float, str], None]) -> dict[str, Any]:
        scene = request.get("scene")
        event = request.get("event_date")
        # with an event date, a named scene is a saved item collection: the scene and the change evidence's items
        items = str(self._scene_path(scene)) if scene and event is not None else None
        cfg = AssessConfig(
            date=request["date"],
            days_before=int(request.get("days_before", 30)),
            region_geojson=_request_geojson(request),
            out=str(folder / "result"),
            stac_url=None if scene or request.get("upload") else (request.get("stac_url") or self.cfg.stac_url),
            items=items,
            scene=None
            if items
            else str(self._scene_path(scene))
            if scene
            else (str(folder / request["upload"]) if request.get("upload") else None),
            event_date=event,
            pre_days=int(request.get("pre_days", PRE_DAYS)),
            post_days=int(request.get("post_days", POST_DAYS)),
            change_max_cloud=float(request.get("change_max_cloud", MAX_CLOUD)),
            bands=[b.strip() for b in request["bands"].split(",")] if request.get("bands") else None,
            max_area_km2=self.cfg.max_area_km2,
            runtime=self.cfg.runtime,
            dem=self.cfg.dem,
            factors=list(self.cfg.factors),
            missing_factors="imagery",
            progress=False,
            http_timeout_s=self.cfg.http_timeout_s,
        )
        sources = self.sources(request, folder)
        result = assess(
            cfg, models=self.models, scorer=self.scorer, log=lambda _line: None, progress=progress, sources=sources
        )
        for name in result.out.iterdir():  # the job's files live beside job.json
            shutil.move(str(name), folder / name.name)
        shutil.rmtree(result.out, ignore_errors=True)
        regions = json.loads((folder / "regions.geojson").read_text(encoding="utf-8"))
        answer = {
            "regions": regions,
            "landslides": json.loads((folder / "landslides.geojson").read_text(encoding="utf-8")),
            "scene_bounds": result.report["scene_bounds"],
            "scene": result.report["scene"],
            # what report.html shows at its top, for the map page
            "warnings": report_warnings(result.report, [f["properties"] for f in regions["features"]]),
        }
        if "change" in result.report:
            answer["change"] = result.report["change"]
        return answer


def _is_item_collection(path: Path) -> bool:
    """Whether ``path`` is a saved STAC item collection (a ``.json`` FeatureCollection)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        return False
    return isinstance(data, dict) and data.get("type") == "FeatureCollection"


def _request_geojson(request: dict[str, Any]) -> dict[str, Any]:
    regions = from_request(request)
    return {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": shapely.geometry.mapping(r.geometry), "properties": {"id": r.id}}
            for r in regions
        ],
    }
