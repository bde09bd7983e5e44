"""Change evidence of regions: the training-free detector's numbers over each region's pixels.

``pipelines.assess`` and ``/v1/assess`` with an event date: the observations of both windows
(:func:`~imagery.change.acquisition.select_observations`, the same as ``map_event``'s) are composited
(:func:`~imagery.change.composite.composite_block`) on the regions' UTM grid at 10 m
(:func:`~imagery.change.acquisition.output_grid`), block by block over each region's window only, and the
detector of :mod:`imagery.change.detector` runs on them with the slope of the DEM. Per region
(:data:`REGION_CHANGE_FEATURES`, every share of the region's pixels, cells whose centre is inside it):

* ``chg_observed_share``: share of the region seen clearly (``min_clear`` acquisitions) both before and after;
* ``chg_clear_pre`` / ``chg_clear_post``: the median number of clear acquisitions of the region's pixels in
  each window (0: the region was never seen clearly);
* ``chg_flagged_share``: share of the *observed* pixels the detector's hard rule flags (vegetation loss on a
  slope where there was vegetation); NaN when nothing was observed;
* ``chg_flagged_m2``: the flagged area, m2 (true pixel areas);
* ``chg_dndvi_slope``: mean dNDVI of the observed pixels on slopes of at least ``min_slope_deg`` (NaN
  when none); negative = vegetation loss;
* ``chg_score_mean``: mean detector score (0..1) of the observed pixels.

What the numbers mean for a verdict (change, no change, unknown) is decided in ``fusion`` (the change
rule of :mod:`fusion.models`); this module only measures. Memory: one block of both composites at a time
(``block`` px square), whatever the region's size.

Threads (the service runs jobs in threads): the compositing keeps band readers open in a per-process cache
(:mod:`imagery.change.composite`), keyed by path. One computation at a time holds :data:`_LOCK` and starts and
ends with that cache empty, so a job never reuses a reader another job opened (each reader is opened, and
checked against the job's allowed sources, inside the job's own ``reads`` context) and no reader is closed
under another job. A job waiting for the lock still stops when cancelled (``check``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import shapely

from common.cli import UserError
from common.geo import Grid, RasterOnGrid, pixel_size_m, slope, terrain_window, zone_of
from common.geo.grid import Window
from imagery.change.acquisition import EventWindows, output_grid
from imagery.change.composite import LAYERS, close_readers, composite_block
from imagery.change.detector import DetectorParams, change_score, detect, observed
from imagery.change.indices import dndvi

WGS84 = "EPSG:4326"
REGION_CHANGE_FEATURES: tuple[str, ...] = (
    "chg_observed_share",
    "chg_clear_pre",
    "chg_clear_post",
    "chg_flagged_share",
    "chg_flagged_m2",
    "chg_dndvi_slope",
    "chg_score_mean",
)
#: Least share of a region's pixels with a slope from the DEM (else the DEM does not cover the region; the
#: rest, e.g. a DEM edge cubic resampling cannot reach, counts as unobserved).
MIN_DEM_SHARE = 0.9
_I_NDVI, _I_COUNT = LAYERS.index("NDVI"), LAYERS.index("clear_count")
_LOCK = threading.Lock()


def _median_of_counts(hist: np.ndarray) -> float:
    """Median of non-negative integers given as a histogram (``hist[k]`` = how many are ``k``)."""
    total = int(hist.sum())
    if total == 0:
        return float("nan")
    return float(np.searchsorted(np.cumsum(hist), (total + 1) / 2))


def _blocks(win: Window, block: int) -> list[Window]:
    r0, c0, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
    return [
        Window(c0 + c, r0 + r, min(block, w - c), min(block, h - r))
        for r in range(0, h, block)
        for c in range(0, w, block)
    ]


def region_change_features(
    windows: EventWindows,
    geometries: Sequence[Any],
    dem: str,
    *,
    ids: Sequence[str] | None = None,
    params: DetectorParams | None = None,
    block: int = 256,
    reads: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    check: Callable[[], None] = lambda: None,
) -> tuple[list[dict[str, float]], Grid]:
    """Per region (``geometries``: shapely polygons in EPSG:4326) the :data:`REGION_CHANGE_FEATURES`, and the grid.

    ``dem``: a DEM covering the regions (any CRS; cubic onto the grid, slope with a one-pixel halo); a region
    that it leaves without slope on more than 10 % of its pixels is a one-line ``UserError``. ``reads``: a
    context manager factory around the reading of the items' band files (the service's
    :func:`common.geo.client_reads`; the DEM is opened before it, it is the operator's). ``check`` runs once per
    block (the service's cooperative cancellation).
    """
    p = params or DetectorParams()
    names = [str(i) for i in ids] if ids is not None else [str(k) for k in range(len(geometries))]
    union = shapely.union_all([shapely.geometry.shape(g) if isinstance(g, dict) else g for g in geometries])
    grid = output_grid(union.bounds)
    spacing = pixel_size_m(grid)
    n_max = len(windows.pre) + len(windows.post) + 2
    rows: list[dict[str, float]] = []
    while not _LOCK.acquire(timeout=0.5):
        check()
    try:
        close_readers()  # readers another computation left open are never reused here
        with RasterOnGrid(dem, grid, "cubic", bands=1) as dem_r, reads():
            try:
                for name, geom in zip(names, geometries, strict=True):
                    zone = zone_of(grid, geom, WGS84)
                    rows.append(
                        _one_region(name, zone, windows, grid, dem, dem_r.read, spacing, p, block, n_max, check)
                    )
            finally:
                close_readers()
    finally:
        _LOCK.release()
    return rows, grid


def _one_region(
    name: str,
    zone: Any,
    windows: EventWindows,
    grid: Grid,
    dem_path: str,
    dem_read: Callable[[Window], np.ndarray],
    spacing: tuple[np.ndarray, np.ndarray],
    p: DetectorParams,
    block: int,
    n_max: int,
    check: Callable[[], None],
) -> dict[str, float]:
    out = dict.fromkeys(REGION_CHANGE_FEATURES, float("nan"))
    if zone.window is None:
        out.update(chg_observed_share=0.0, chg_clear_pre=0.0, chg_clear_post=0.0, chg_flagged_m2=0.0)
        return out
    win = zone.window
    hist_pre = np.zeros(n_max, np.int64)
    hist_post = np.zeros(n_max, np.int64)
    n_in = n_obs = n_hit = n_slope = n_dem = 0
    sum_d = sum_score = 0.0
    for sub in _blocks(win, block):
        check()
        r, c = int(sub.row_off - win.row_off), int(sub.col_off - win.col_off)
        inside = zone.inside[r : r + int(sub.height), c : c + int(sub.width)]
        if not inside.any():
            continue
        pre = composite_block(windows.pre, grid, sub)
        post = composite_block(windows.post, grid, sub)
        sl = terrain_window(slope, dem_read, grid, sub, spacing=spacing).astype(np.float32)
        d = dndvi(pre[_I_NDVI], post[_I_NDVI])
        score = change_score(d, sl, pre[_I_NDVI], pre[_I_COUNT], post[_I_COUNT], p)
        hit = detect(d, sl, pre[_I_NDVI], pre[_I_COUNT], post[_I_COUNT], p)
        seen = observed(pre[_I_COUNT], post[_I_COUNT], p) & inside & np.isfinite(sl)
        n_in += int(inside.sum())
        n_dem += int((inside & np.isfinite(sl)).sum())
        n_obs += int(seen.sum())
        n_hit += int((hit & seen).sum())
        hist_pre += np.bincount(np.nan_to_num(pre[_I_COUNT][inside]).astype(np.int64), minlength=n_max)[:n_max]
        hist_post += np.bincount(np.nan_to_num(post[_I_COUNT][inside]).astype(np.int64), minlength=n_max)[:n_max]
        on_slope = seen & (sl >= p.min_slope_deg) & np.isfinite(d)
        n_slope += int(on_slope.sum())
        sum_d += float(d[on_slope].sum(dtype=np.float64))
        sum_score += float(np.nan_to_num(score[seen]).sum(dtype=np.float64))
    if n_in and n_dem < MIN_DEM_SHARE * n_in:
        raise UserError(
            f"--dem {dem_path}: does not cover region {name} ({n_dem / n_in:.0%} of its pixels have a slope); "
            "expected a DEM over every region"
        )
    cells = max(zone.cells, 1)
    out["chg_observed_share"] = n_obs / cells
    out["chg_clear_pre"] = _median_of_counts(hist_pre) if n_in else 0.0
    out["chg_clear_post"] = _median_of_counts(hist_post) if n_in else 0.0
    out["chg_flagged_m2"] = n_hit * zone.pixel_area_m2(grid)
    if n_obs:
        out["chg_flagged_share"] = n_hit / n_obs
        out["chg_score_mean"] = sum_score / n_obs
    if n_slope:
        out["chg_dndvi_slope"] = sum_d / n_slope
    return out
