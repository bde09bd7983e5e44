"""Map an event: composites, change evidence, the detector, fusion and the inventory, written to a folder.

:func:`map_event` runs block by block over the output grid (:func:`~imagery.change.acquisition.output_grid`):
each block is composited for both windows (:func:`~imagery.change.composite.composite_block`), its change
layers and slope (DEM read onto the grid, cubic, with a one-pixel halo: equal to a whole-array slope) are
computed, the detector scores it and the optional ``fuse`` callable combines the score with the
susceptibility block (``fusion.change_fusion.fuse_change`` in ``pipelines.map_event``; ``imagery`` does not
import ``fusion``). Blocks are streamed into COGs; the inventory is built once over the whole detection mask,
so a landslide crossing a block or tile border is one polygon, never cut.

Outputs (in ``out``, which the caller stages atomically): ``pre.tif`` / ``post.tif`` (float32, NaN nodata,
bands :data:`~imagery.change.composite.LAYERS` with their descriptions, the last one ``clear_count``),
``change.tif`` (``dNDVI``, ``rdNDVI``, ``dBSI``, ``slope_deg``), ``probability.tif`` (float32, NaN where
unobserved), ``landslides.gpkg`` (grid CRS; layers ``landslides``, the inventory, and ``rejected``, the candidates
left out of it with the reason: :func:`imagery.change.inventory.build_rejected`), ``landslides.geojson`` and
``rejected.geojson`` (EPSG:4326).

Memory: the blocks in flight plus one whole-area array, the label mask (1 byte per pixel: detected, or the kind of
rejected candidate; 240 MB for two full Sentinel-2 tiles); polygons are built strip by strip and their statistics
read from the written COGs, one polygon's window at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import UserError
from common.geo import (
    CogWriter,
    Feature,
    Grid,
    RasterOnGrid,
    StripPolygonizer,
    block_cache,
    iter_windows,
    landslides_by_confidence_qml,
    pixel_size_m,
    rejected_by_kind_qml,
    slope,
    terrain_window,
    write_geojson,
    write_gpkg_layers,
)
from common.geo.grid import Window
from imagery.change.acquisition import EventWindows, area_km2, output_grid
from imagery.change.composite import LAYERS, acquisitions, band_composite, close_readers, composite_block
from imagery.change.defaults import GDAL_CACHE_MB
from imagery.change.detector import DetectorParams, change_score, detect, observed
from imagery.change.engine import BlockCache, Engine, fingerprint, run_blocks
from imagery.change.indices import dndvi, rdndvi
from imagery.change.inventory import build_inventory, build_rejected, rejected_counts
from imagery.change.segmenter import BlockSegmenter, GateParams, tile_passes

CHANGE_LAYERS: tuple[str, ...] = ("dNDVI", "rdNDVI", "dBSI", "slope_deg")
#: The kinds of rejected candidates, by their code in a block's ``rejected_kind`` (``inventory.REJECTED_WORDS``).
REJECTED_KINDS: dict[int, str] = {1: "flat_loss", 2: "segmenter_only"}
#: ``fuse(score, susceptibility) -> probability``, all ``(h, w)`` float32 (susceptibility may be None).
FuseFn = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
_I_NDVI, _I_BSI, _I_COUNT = LAYERS.index("NDVI"), LAYERS.index("BSI"), LAYERS.index("clear_count")


@dataclass(frozen=True)
class EventConfig:
    """What :func:`map_event` needs besides the observations (units in the names)."""

    bbox: tuple[float, float, float, float]
    dem: str
    susceptibility: str | None = None
    min_area_m2: float = 500.0
    block: int = 512
    detector: DetectorParams = field(default_factory=DetectorParams)
    #: where the segmenter runs (``--imagery-model``; :mod:`imagery.change.segmenter`)
    gate: GateParams = field(default_factory=GateParams)


@dataclass
class EventResult:
    """What :func:`map_event` wrote: the grid, the inventory and the summary (also ``summary.json`` content)."""

    grid: Grid
    features: list[Feature]
    summary: dict[str, Any]
    #: the candidates left out of the inventory (``rejected`` layer), by area
    rejected: list[Feature] = field(default_factory=list)
    #: with a segmenter: a strided sample of what it was fed ``(C, k)``, gathered from every block (the domain
    #: check of ``imagery.inference.fitness``); ``None`` without one
    domain_sample: np.ndarray | None = None


def _observations(windows: EventWindows, name: str) -> list[dict[str, Any]]:
    obs = windows.pre if name == "pre" else windows.post
    return [
        {"id": o.item_id, "date": o.date.isoformat(), "orbit": o.orbit, "cloud_cover": o.cloud_cover, "scl": o.has_scl}
        for o in obs
    ]


def _dates(windows: EventWindows, name: str) -> list[str]:
    obs = windows.pre if name == "pre" else windows.post
    return [g[0].date.isoformat() for g in acquisitions(obs)]


@block_cache(GDAL_CACHE_MB)  # also in a Dask worker: its GDAL cache bounded like the parent's
def process_block(
    win: Window,
    *,
    windows: EventWindows,
    config: EventConfig,
    grid: Grid,
    fuse: FuseFn | None = None,
    segment: BlockSegmenter | None = None,
) -> dict[str, np.ndarray]:
    """One block as a task (picklable arguments, opens its own rasters): ``pre``/``post`` ``(8, h, w)``,
    ``change`` ``(4, h, w)``, ``probability`` ``(h, w)``, ``detected`` ``(h, w)`` uint8, ``susceptibility``
    (NaN without one), ``rejected`` ``[flat_ground, bare_before]`` pixel counts and ``rejected_kind`` ``(h, w)``
    uint8 (the candidates left out of the inventory, :data:`REJECTED_KINDS`: 1 vegetation loss where the slope
    rule fails, 2 the segmenter's probability at or above its threshold where nothing changed, 0 neither);
    timings in ``seconds`` (composite, change, segmenter). With ``segment``: ``segmenter`` ``(h, w)`` (its
    probability on the tiles that passed the gate, NaN elsewhere), ``tiles`` ``[total, run]`` and ``domain_sample``
    ``(C, k)`` (what the network was fed, sampled for the parent's domain check)."""
    p = config.detector
    t = time.perf_counter()
    pre = composite_block(windows.pre, grid, win)
    post = composite_block(windows.post, grid, win)
    t_comp = time.perf_counter() - t
    t = time.perf_counter()
    ndvi_pre, ndvi_post = pre[_I_NDVI], post[_I_NDVI]
    d = dndvi(ndvi_pre, ndvi_post)
    rd = rdndvi(ndvi_pre, ndvi_post)
    db = (post[_I_BSI] - pre[_I_BSI]).astype(np.float32)
    with RasterOnGrid(config.dem, grid, "cubic", bands=1) as dem:
        sl = terrain_window(slope, dem.read, grid, win, spacing=pixel_size_m(grid)).astype(np.float32)
        dem_blk = dem.read(win) if segment is not None else None
    score = change_score(d, sl, ndvi_pre, pre[_I_COUNT], post[_I_COUNT], p)
    s_blk = np.full(score.shape, np.nan, np.float32)
    if config.susceptibility:
        with RasterOnGrid(config.susceptibility, grid, "bilinear", bands=1) as sus:
            s_blk = sus.read(win)
    sus_or_none = s_blk if config.susceptibility else None
    t_change = time.perf_counter() - t
    extra: dict[str, np.ndarray] = {}
    t = time.perf_counter()
    if segment is not None:
        extra = _segment_block(segment, win, windows, grid, config.gate, score, sus_or_none, sl, dem_blk)
    t_seg = time.perf_counter() - t
    t = time.perf_counter()
    if fuse is None:
        prob = score
    elif segment is not None:
        prob = fuse(score, sus_or_none, p_segmenter=extra["segmenter"])  # type: ignore[call-arg]
    else:
        prob = fuse(score, sus_or_none)
    prob = np.where(np.isfinite(score), prob, np.nan).astype(np.float32)
    hit = detect(d, sl, ndvi_pre, pre[_I_COUNT], post[_I_COUNT], p)
    seen = observed(pre[_I_COUNT], post[_I_COUNT], p)
    with np.errstate(invalid="ignore"):
        loss = (-d >= p.min_ndvi_loss) & seen
        flat = loss & (sl < p.min_slope_deg)
        rejected = [int(flat.sum()), int((loss & (ndvi_pre < p.min_pre_ndvi)).sum())]
        kind = np.where(flat & ~hit, 1, 0).astype(np.uint8)
        if segment is not None:  # a scar to the segmenter, yet no vegetation loss at all
            kind[(extra["segmenter"] >= float(segment.threshold)) & seen & ~loss & ~hit] = 2
    return {
        "pre": pre,
        "post": post,
        "change": np.stack([d, rd, db, sl]),
        "probability": prob,
        "detected": hit.astype(np.uint8),
        "susceptibility": s_blk,
        "rejected": np.array(rejected, np.int64),
        "rejected_kind": kind,
        "seconds": np.array([t_comp, t_change + time.perf_counter() - t, t_seg]),
        **extra,
    }


def _segment_block(
    segment: BlockSegmenter,
    win: Window,
    windows: EventWindows,
    grid: Grid,
    gate: GateParams,
    score: np.ndarray,
    sus: np.ndarray | None,
    slope_deg: np.ndarray,
    dem_m: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """The segmenter on one block: the tiles passing the gate (:func:`imagery.change.segmenter.tile_passes`), the
    composites of its bands (only when a tile passes) and its probability on those tiles."""
    h, w = score.shape
    tiles = segment.tiles(h, w)
    run = [
        (r, c, th, tw)
        for r, c, th, tw in tiles
        if tile_passes(score[r : r + th, c : c + tw], None if sus is None else sus[r : r + th, c : c + tw], gate)
    ]
    prob = np.full((h, w), np.nan, np.float32)
    sample = np.zeros((0, 0), np.float32)
    if run:
        post = band_composite(windows.post, grid, win, segment.bands, with_ndvi=segment.with_ndvi)
        pre = (
            band_composite(windows.pre, grid, win, segment.bands, with_ndvi=segment.with_ndvi)
            if segment.needs_pre
            else None
        )
        dem = dem_m if dem_m is not None else np.full((h, w), np.nan, np.float32)
        p_seg, sample = segment(
            post, pre, slope_deg, dem, run, origin=(int(win.row_off), int(win.col_off)), grid_shape=grid.shape
        )
        prob = np.asarray(p_seg, dtype=np.float32)
    return {
        "segmenter": prob,
        "tiles": np.array([len(tiles), len(run)], np.int64),
        "domain_sample": np.asarray(sample, np.float32),
    }


def _settings(
    windows: EventWindows, config: EventConfig, grid: Grid, fuse_settings: Any, segment: BlockSegmenter | None = None
) -> tuple[dict, list]:
    """What a block's result depends on: settings (JSON-able; the segmenter's weights digest among them) and files
    (for :func:`engine.fingerprint`)."""
    obs = [*windows.pre, *windows.post]
    settings = {
        "config": {**config.__dict__, "detector": config.detector.__dict__, "gate": config.gate.__dict__},
        "grid": [grid.crs, list(grid.transform)[:6], grid.width, grid.height],
        "items": [[o.item_id, o.date.isoformat(), o.orbit] for o in obs],
        "fusion": fuse_settings,
        "segmenter": segment.describe() if segment is not None else None,
        "version": 3,
    }
    files = [f.path for o in obs for f in o.files.values()] + [config.dem, config.susceptibility]
    return settings, files


@block_cache(GDAL_CACHE_MB)  # readers, writers, COG conversions and the report: a bounded GDAL cache
def map_event(
    windows: EventWindows,
    config: EventConfig,
    out: Path,
    *,
    fuse: FuseFn | None = None,
    fuse_settings: Any = None,
    segment: BlockSegmenter | None = None,
    engine: Engine = "local",
    scheduler: str | None = None,
    workers: int = 2,
    cache_dir: Path | None = None,
    resume: bool = False,
    progress: Callable[[str], None] = lambda _m: None,
) -> EventResult:
    """Run the whole event into ``out`` (module docstring); one-line errors for a DEM not covering the area.

    ``engine``/``scheduler``/``workers``: where the blocks run (:mod:`imagery.change.engine`). ``cache_dir``: the
    block cache (``resume`` reuses its blocks when every input and setting is unchanged; ``fuse_settings``
    describe ``fuse`` for that check); removed after success. ``segment``: the segmenter run on the tiles passing
    ``config.gate`` (:mod:`imagery.change.segmenter`); its probability is written to ``segmenter.tif``, passed to
    ``fuse`` as ``p_segmenter`` and summarised per polygon (``p_segmenter``); the result carries the blocks' samples
    of what it was fed (``domain_sample``) and the summary the observed pixels it flags (``flagged_pixels``), for the
    caller's fitness checks (``imagery.inference.fitness``). The candidates the cross-checks reject (vegetation loss
    on flat ground; with ``segment``, its scars where nothing changed) are polygonized like the inventory, never
    mixed into it: ``rejected`` layer, ``rejected.geojson``, ``EventResult.rejected``.
    """
    t0 = time.perf_counter()
    grid = output_grid(config.bbox)
    p = config.detector
    with _open_dem(config.dem, grid):
        pass  # the coverage check, once, before any block runs
    # the only whole-area array, 1 byte per pixel: 1 detected, 2 / 3 rejected as REJECTED_KINDS 1 / 2, 0 neither
    labels = np.zeros(grid.shape, dtype=np.uint8)
    counts = np.zeros(3, np.int64)  # unobserved before, unobserved after, observed (finite probability)
    rejected = np.zeros(2, np.int64)
    timings = {"composite_s": 0.0, "change_s": 0.0, "polygons_s": 0.0}
    if segment is not None:
        timings["segmenter_s"] = 0.0
    blocks = list(iter_windows(grid, config.block, config.block))
    cache = None
    if cache_dir is not None:
        settings, files = _settings(windows, config, grid, fuse_settings, segment)
        cache = BlockCache(cache_dir, fingerprint(settings, files), resume=resume)
    out.mkdir(parents=True, exist_ok=True)
    task = partial(process_block, windows=windows, config=config, grid=grid, fuse=fuse, segment=segment)
    seg_tiles = np.zeros(2, np.int64)  # tiles in all blocks, tiles the segmenter ran on
    seg_info = segment.describe() if segment is not None else None
    seg_threshold = float(seg_info["threshold"]) if seg_info else 0.5
    seg_flagged = np.zeros(1, np.int64)  # observed pixels where the segmenter's probability >= its threshold
    detected_px = np.zeros(1, np.int64)
    domain_samples: list[np.ndarray] = []
    with contextlib.ExitStack() as stack:
        desc = list(LAYERS)
        w_pre = stack.enter_context(
            CogWriter(out / "pre.tif", grid, "float32", np.nan, len(LAYERS), band_descriptions=desc)
        )
        w_post = stack.enter_context(
            CogWriter(out / "post.tif", grid, "float32", np.nan, len(LAYERS), band_descriptions=desc)
        )
        w_chg = stack.enter_context(
            CogWriter(out / "change.tif", grid, "float32", np.nan, len(CHANGE_LAYERS), band_descriptions=CHANGE_LAYERS)
        )
        w_prob = stack.enter_context(
            CogWriter(out / "probability.tif", grid, "float32", np.nan, 1, band_descriptions=["probability"])
        )
        w_seg = None
        if segment is not None:
            w_seg = stack.enter_context(
                CogWriter(out / "segmenter.tif", grid, "float32", np.nan, 1, band_descriptions=["p_segmenter"])
            )
        n_done = [0]

        def collect(win: Window, r: dict[str, np.ndarray]) -> None:
            nonlocal rejected
            rows = slice(int(win.row_off), int(win.row_off + win.height))
            cols = slice(int(win.col_off), int(win.col_off + win.width))
            w_pre.write(r["pre"], win)
            w_post.write(r["post"], win)
            w_chg.write(r["change"], win)
            w_prob.write(r["probability"][None], win)
            counts[0] += int((np.nan_to_num(r["pre"][_I_COUNT]) < p.min_clear).sum())
            counts[1] += int((np.nan_to_num(r["post"][_I_COUNT]) < p.min_clear).sum())
            counts[2] += int(np.isfinite(r["probability"]).sum())
            kind = r["rejected_kind"]
            labels[rows, cols] = np.where(r["detected"] > 0, 1, np.where(kind > 0, kind + 1, 0))
            detected_px[0] += int(np.count_nonzero(r["detected"]))
            rejected = rejected + r["rejected"]
            timings["composite_s"] += float(r["seconds"][0])
            timings["change_s"] += float(r["seconds"][1])
            if w_seg is not None:
                w_seg.write(r["segmenter"][None], win)
                seg_tiles[:] += r["tiles"]
                with np.errstate(invalid="ignore"):
                    seg_flagged[0] += int(((r["segmenter"] >= seg_threshold) & np.isfinite(r["probability"])).sum())
                if r["domain_sample"].size:
                    domain_samples.append(r["domain_sample"])
                timings["segmenter_s"] += float(r["seconds"][2])
            n_done[0] += 1
            progress(f"  block {n_done[0]}/{len(blocks)}: rows {rows.start}-{rows.stop}, cols {cols.start}-{cols.stop}")

        try:
            computed = run_blocks(
                task, blocks, collect, engine=engine, scheduler=scheduler, workers=workers, cache=cache
            )
        finally:
            close_readers()  # this process's; Dask workers close theirs when they exit
    t = time.perf_counter()
    pre_dates, post_dates = _dates(windows, "pre"), _dates(windows, "post")
    codes = {1: "detected", **{c + 1: k for c, k in REJECTED_KINDS.items() if segment is not None or c == 1}}
    strips = {name: StripPolygonizer(grid, min_area_m2=config.min_area_m2) for name in codes.values()}
    for row in range(0, grid.height, config.block):  # one strip of the labels at a time, a mask per kind
        strip = labels[row : row + config.block]
        for code, name in codes.items():
            strips[name].add(strip == code, row)
    with _layer_reader(out, grid, config.susceptibility, segmenter=segment is not None) as read:
        features = build_inventory(
            strips.pop("detected").features(),
            grid,
            read,
            pre_dates=pre_dates,
            post_dates=post_dates,
            segmenter_threshold=seg_threshold,
        )
        rejected_features = build_rejected({k: sp.features() for k, sp in strips.items()}, grid, read)
    write_gpkg_layers(  # landslides open in QGIS by confidence (low, medium, high from 0.5), rejected by kind
        out / "landslides.gpkg",
        grid.crs,
        {
            "landslides": (features, landslides_by_confidence_qml(None, "confidence")),
            "rejected": (rejected_features, rejected_by_kind_qml()),
        },
    )
    write_geojson(features, out / "landslides.geojson", grid.crs)
    write_geojson(rejected_features, out / "rejected.geojson", grid.crs)
    timings["polygons_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    timings = {k: round(v, 3) for k, v in timings.items()}
    n_px = grid.width * grid.height
    summary: dict[str, Any] = {
        "event_date": windows.event_date.isoformat(),
        "bbox": list(config.bbox),
        "area_km2": round(area_km2(config.bbox), 4),
        "grid": {"crs": grid.crs, "transform": list(grid.transform)[:6], "width": grid.width, "height": grid.height},
        "windows": {
            "pre": {"start": windows.pre_start.isoformat(), "end": windows.pre_end.isoformat()},
            "post": {"start": windows.post_start.isoformat(), "end": windows.post_end.isoformat()},
        },
        "items": {"pre": _observations(windows, "pre"), "post": _observations(windows, "post")},
        "acquisitions": {"pre": pre_dates, "post": post_dates},
        "unobserved_share": {
            "pre": round(float(counts[0] / (grid.width * grid.height)), 4),
            "post": round(float(counts[1] / (grid.width * grid.height)), 4),
        },
        "detector": {k: getattr(p, k) for k in p.__dataclass_fields__},
        "segmenter": _segmenter_summary(seg_info, seg_tiles, config.gate, timings),
        "susceptibility": config.susceptibility,
        "engine": engine,
        "blocks": len(blocks),
        "blocks_computed": computed,
        "blocks_resumed": len(blocks) - computed,
        "n_landslides": len(features),
        "detected_area_m2": round(float(sum(f.properties["area_m2"] for f in features)), 1),
        "detected_pixels": int(detected_px[0]),
        "n_rejected": len(rejected_features),
        "rejected": rejected_counts(rejected_features),
        "rejected_pixels": {
            "flat_ground (vegetation loss on flat ground: likely harvest)": int(rejected[0]),
            "bare_before (bare before the event: quarry, river bar, rock)": int(rejected[1]),
        },
        "observed_pixels": int(counts[2]),
        "warnings": [],  # what to check before use (the caller adds the segmenter's fit warnings)
        "pixels": n_px,
        "timings": timings,
        "outputs": ["pre.tif", "post.tif", "change.tif", "probability.tif", "landslides.gpkg", "landslides.geojson"]
        + ["rejected.geojson"]
        + (["segmenter.tif"] if segment is not None else []),
    }
    if isinstance(summary["segmenter"], dict):
        summary["segmenter"]["flagged_pixels"] = int(seg_flagged[0])
    domain = np.concatenate(domain_samples, axis=1) if domain_samples else None
    if segment is not None and domain is None:
        domain = np.zeros((0, 0), np.float32)
    return EventResult(grid, features, summary, rejected_features, domain)


def _segmenter_summary(
    info: dict[str, Any] | None, tiles: np.ndarray, gate: GateParams, timings: dict[str, float]
) -> dict[str, Any] | str:
    """The summary's ``segmenter`` entry: a sentence without a model; with one, the model, the gate and its tiles."""
    if info is None:
        return "none: inventory from change evidence alone (no --imagery-model)"
    total, run = int(tiles[0]), int(tiles[1])
    return {
        **info,
        "gate": {k: getattr(gate, k) for k in gate.__dataclass_fields__},
        "tiles_total": total,
        "tiles_run": run,
        "tiles_skipped": total - run,
        "skipped_share": round((total - run) / total, 4) if total else 0.0,
        "seconds": timings.get("segmenter_s", 0.0),
    }


@contextlib.contextmanager
def _layer_reader(
    out: Path, grid: Grid, susceptibility: str | None, *, segmenter: bool = False
) -> Iterator[Callable[[Window], dict]]:
    """``read(window) -> {layer: (h, w)}`` of the written COGs (and the susceptibility), for the inventory."""
    with contextlib.ExitStack() as stack:
        seg = stack.enter_context(RasterOnGrid(out / "segmenter.tif", grid, "nearest", bands=1)) if segmenter else None
        prob = stack.enter_context(RasterOnGrid(out / "probability.tif", grid, "nearest", bands=1))
        chg = stack.enter_context(RasterOnGrid(out / "change.tif", grid, "nearest", bands=[1, 2, 3, 4]))
        pre = stack.enter_context(RasterOnGrid(out / "pre.tif", grid, "nearest", bands=[_I_NDVI + 1, _I_COUNT + 1]))
        post = stack.enter_context(RasterOnGrid(out / "post.tif", grid, "nearest", bands=[_I_NDVI + 1, _I_COUNT + 1]))
        sus = stack.enter_context(RasterOnGrid(susceptibility, grid, "bilinear", bands=1)) if susceptibility else None

        def read(win: Window) -> dict[str, np.ndarray]:
            d, rd, db, sl = chg.read(win)
            (ndvi_pre, clear_pre), (ndvi_post, clear_post) = pre.read(win), post.read(win)
            layers = {"probability": prob.read(win), "dndvi": d, "rdndvi": rd, "dbsi": db, "slope_deg": sl}
            layers |= {"ndvi_pre": ndvi_pre, "ndvi_post": ndvi_post, "clear_pre": clear_pre, "clear_post": clear_post}
            if sus is not None:
                layers["susceptibility"] = sus.read(win)
            if seg is not None:
                layers["p_segmenter"] = seg.read(win)
            return layers

        yield read


@contextlib.contextmanager
def _open_dem(path: str, grid: Grid) -> Any:
    """The DEM on the grid (cubic: see :class:`common.geo.RasterOnGrid`); it must cover the whole area."""
    try:
        with RasterOnGrid(path, grid, "cubic", bands=1, min_coverage=0.999) as r:
            yield r
    except UserError as exc:
        text = str(exc)
        if "cover" in text or "overlap" in text:
            raise UserError(f"--dem {path}: does not cover the area ({text})") from None
        raise
