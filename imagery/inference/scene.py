"""Windowed landslide mapping of a whole Sentinel-2 scene in bounded memory (``pipelines.predict_scene``).

Data flow, one row of tiles at a time (never the whole scene in memory):

1. :func:`imagery.data.sentinel2.open_scene` finds the band files; the **scene grid** is the finest grid
   among the bands the model needs (10 m for a real product; whatever each file's own georeferencing says).
   Every band is read onto it through ``common.geo.RasterOnGrid``: **bilinear** for reflectance (20/60 m
   bands upsampled), **nearest** for the SCL classes. A band covering less than 99% of that grid (another
   extent) is an error naming it; a band in another CRS is reprojected.
2. Values: ``reflectance = DN * scale + offset`` (the product's own, see ``imagery.data.sentinel2``), then
   L4S model units (``imagery.data.bands.to_model_units``, the one place units are defined).
3. ``--dem``: any DEM raster in any CRS, warped onto the scene grid (bilinear; cubic when the DEM is finer
   than the scene), slope in degrees from it with true metres per pixel (``common.geo.terrain_window``
   with ``pixel_size_m``), so a geographic DEM (GLO-30 in EPSG:4326) gives the slope of the same terrain in
   UTM. It must cover >= 99% of the scene (else an error naming the covered share).
4. Masking: pixels with a nodata band, a masked SCL class (``SceneConfig.scl_mask``) or no DEM are nodata in
   every output and their share is reported by reason; they are never "no landslide". Masked pixels are
   set to NaN before the model sees a tile (the cleaning replaces them by the tile's band median), so a
   cloud does not stretch a tile's min-max channels; tiles without any valid pixel are not predicted.
5. A strip of ``tile`` rows is read (in a background thread at a lower CPU priority, one strip ahead, so that it
   fills the cores the network leaves idle instead of taking them from it), cut into ``tile`` x ``tile``
   tiles overlapping by ``overlap`` px (``tile_starts``: the last one flush with the far edge), predicted
   in batches (on the GPU when present) and blended with ``blend_weights`` into a rolling buffer of
   ``tile`` rows; rows no later tile touches are final and are written to the COGs (``common.geo.CogWriter``)
   and fed to ``common.geo.StripPolygonizer``.

Memory: two strips of the model's bands (``2 x bands x tile x width`` float32), the rolling buffers, a
batch of tiles through the network, GDAL's block cache (``SCENE_CACHE_MB``), a prewarped DEM on disk (4 bytes per
pixel, removed at the end) and the polygons kept; it depends on the
scene's width, not its height. Measured on a CPU with the small model: 1.9 GB peak RSS on a strip of the
full 10980 px tile width (``benchmarks/RESULTS.md``, "Scenes"), under the 3 GB target; ``--batch-size``
lowers it further.

Outputs (written into a hidden staging folder beside ``OUTDIR`` and moved in at the end by
``common.atomic.atomic_dir``, so a failed run leaves nothing half-written): ``probability.tif`` (float32
0-1, NaN nodata) and ``mask.tif`` (uint8 0/1, 255 nodata) as COGs on the scene grid, ``landslides.geojson``
(EPSG:4326) and ``landslides.gpkg`` (scene CRS) with ``id, area_m2, n_pixels, mean_prob, max_prob,
centroid_lon, centroid_lat``, ``overview.png`` and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from affine import Affine
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from common.atomic import atomic_dir, atomic_write
from common.cancel import check_cancelled
from common.cli import UserError
from common.geo import (
    CLASSES_TAG,
    CogWriter,
    Feature,
    Grid,
    RasterOnGrid,
    StripPolygonizer,
    classes_qml,
    coverage_fraction,
    landslides_by_confidence_qml,
    pixel_size_m,
    probability_qml,
    read_raster,
    slope,
    terrain_window,
    write_geojson,
    write_gpkg,
)
from common.geo.grid import Window
from common.threads import lower_this_thread
from imagery.data.bands import BANDS, L4S_BAND_MEANS, model_unit_factor
from imagery.data.sentinel2 import SCL_CLASSES, SCL_REASONS, SceneSource, open_scene
from imagery.inference.config import SCENE_CACHE_MB, SceneConfig
from imagery.inference.engine import apply_engine, log_engine_summary
from imagery.inference.fitness import (
    DomainCheck,
    check_flagged_share,
    check_resolution,
    check_training_data,
    fit_metrics,
    scene_pixel_m,
)
from imagery.inference.lanes import lane_count, with_lanes
from imagery.inference.predict import add_tile, blend_weights, count_tiles, tile_starts
from imagery.inference.segmenter import Segmenter
from imagery.inference.serving import load_segmenter
from imagery.inference.skip import SCL_WATER, SKIP_REASONS, SkipRules, plan_tiles, reason_code
from imagery.plot import save_figure

#: Value a model-needed B10 gets on an L2A product (no cirrus band): its L4S mean, 1.0 in model units.
B10_FILL = 1.0
MIN_BAND_COVERAGE = 0.99
MIN_DEM_COVERAGE = 0.99
OVERVIEW_MAX_PX = 1200
MAX_OUTLINES = 20000  # the largest polygons drawn on overview.png (all are in the vector files)
OUTPUT_NAMES = (
    "probability.tif",
    "mask.tif",
    "probability.qml",
    "mask.qml",
    "landslides.geojson",
    "landslides.gpkg",
    "overview.png",
    "summary.json",
)
_REASON_ORDER = ("nodata", "saturated", "cloud", "cloud_shadow", "snow", "no_dem")

MASK_CLASSES = {"0": "no landslide", "1": "landslide"}  # mask.tif codes (255 nodata)


def _reason_code(name: str) -> int:
    """The ``reason`` value of a mask reason: 1 + its index in ``_REASON_ORDER`` (unknown names: 1, nodata)."""
    return _REASON_ORDER.index(name) + 1 if name in _REASON_ORDER else 1


@dataclass(frozen=True)
class SceneResult:
    """What :func:`run_scene` wrote: the output folder, the summary (as in ``summary.json``) and the files."""

    out: Path
    summary: dict[str, Any]
    paths: dict[str, Path]


# ----------------------------------------------------------------------------- inputs
@dataclass
class _Inputs:
    scene: SceneSource
    grid: Grid
    model_bands: tuple[str, ...]
    spectral: list[str]
    filled: list[str]
    dem: str | None
    dem_resampling: str
    reprojected: list[str]


def _grid_of(scene: SceneSource, bands: list[str]) -> tuple[Grid, list[str]]:
    """The finest grid among ``bands`` (first in band order on ties) and the bands in another CRS."""
    grids = {b: Grid.from_raster(scene.files[b].path) for b in bands}
    best = min(bands, key=lambda b: (float(np.min(pixel_size_m(grids[b])[1])), bands.index(b)))
    grid = grids[best]
    return grid, [b for b in bands if grids[b].crs != grid.crs]


def plan_inputs(scene: SceneSource, segmenter: Segmenter, cfg: SceneConfig, log: Callable[[str], None]) -> _Inputs:
    """Check that the scene (and DEM) provide what the model needs; pick the grid. One-line errors."""
    model_bands = segmenter.bands
    needs_dem = [b for b in model_bands if b in ("slope", "DEM")]
    spectral = [b for b in model_bands if b not in ("slope", "DEM")]
    missing = [b for b in spectral if b not in scene.files]
    filled: list[str] = []
    if missing == ["B10"] and cfg.fill_b10:
        filled = ["B10"]
        warnings.warn(
            f"the model needs B10 (cirrus), which {scene.product} product {scene.scene_id} lacks: B10 is filled with "
            f"its L4S mean ({B10_FILL} in model units, DN {L4S_BAND_MEANS[BANDS.index('B10')]:.1f}); a model trained "
            "with --bands without B10 avoids this",
            UserWarning,
            stacklevel=2,
        )
    elif missing:
        raise UserError(
            f"--scene {scene.source}: the model needs bands {', '.join(model_bands)}; the scene has no "
            f"{', '.join(missing)} file (found {scene.describe_bands()})"
        )
    if needs_dem and not cfg.dem:
        raise UserError(
            f"--model {cfg.model_uri}: the model's bands {', '.join(model_bands)} include {' and '.join(needs_dem)}; "
            "pass --dem DEM.tif (or use a model trained with --bands without slope/DEM)"
        )
    read = [b for b in spectral if b not in filled]
    if not read:
        read = [b for b in scene.bands if b != "B8A"] or list(scene.bands)
    grid, reprojected = _grid_of(scene, read)
    if reprojected:
        log(f"note: band(s) {', '.join(reprojected)} are in another CRS than {grid.crs}; reprojected onto its grid")
    dem_resampling = "bilinear"
    if cfg.dem:
        dem_grid = Grid.from_raster(cfg.dem)
        cover = coverage_fraction(grid, tuple(dem_grid.bounds), dem_grid.crs)
        if cover < MIN_DEM_COVERAGE:
            raise UserError(
                f"--dem {cfg.dem} covers {cover:.1%} of the scene {scene.scene_id} ({grid.width}x{grid.height} px in "
                f"{grid.crs}); expected a DEM covering the whole scene (mosaic several tiles into one VRT first)"
            )
        dem_px = float(np.min(pixel_size_m(dem_grid)[1]))
        dem_resampling = "cubic" if dem_px < float(np.min(pixel_size_m(grid)[1])) else "bilinear"
    return _Inputs(scene, grid, model_bands, spectral, filled, cfg.dem, dem_resampling, reprojected)


class _StripReader:
    """Reads the model's raw bands (L4S units, NaN = masked) and the mask reasons for rows of the scene grid."""

    def __init__(self, inp: _Inputs, cfg: SceneConfig) -> None:
        self.inp = inp
        self.cfg = cfg
        self.grid = inp.grid
        self.stack = contextlib.ExitStack()
        self.readers: dict[str, RasterOnGrid] = {}
        self.scl: RasterOnGrid | None = None
        self.dem: RasterOnGrid | None = None
        self.spacing = pixel_size_m(self.grid)
        #: ``(SCL class, reason code)`` of each masked class (reason codes as in :meth:`read`)
        self.scl_codes = [(cls, _reason_code(SCL_REASONS.get(cls, "nodata"))) for cls in sorted(set(cfg.scl_mask))]

    def __enter__(self) -> _StripReader:
        try:
            for b in self.inp.spectral:
                if b in self.inp.filled:
                    continue
                f = self.inp.scene.files[b]
                self.readers[b] = self._open(f.path, "bilinear", f.index, b)
            if self.inp.scene.has_scl:
                f = self.inp.scene.files["SCL"]
                self.scl = self._open(f.path, "nearest", f.index, "SCL")
            if self.inp.dem:
                self.dem = self.stack.enter_context(
                    RasterOnGrid(self.inp.dem, self.grid, self.inp.dem_resampling, bands=1, exact=True, prewarp=True)
                )
        except BaseException:
            self.stack.close()
            raise
        return self

    def _open(self, path: str, resampling: str, index: int, band: str) -> RasterOnGrid:
        try:
            return self.stack.enter_context(
                RasterOnGrid(path, self.grid, resampling, bands=index, min_coverage=MIN_BAND_COVERAGE)
            )
        except UserError as exc:
            raise UserError(f"band {band} of scene {self.inp.scene.scene_id}: {exc}") from None

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def read(self, row: int, rows: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | None]]:
        """``(raw (C, rows, W) float32 in model units with NaN where masked, reason (rows, W) uint8, terrain)``.

        ``reason`` is 0 for a valid pixel, else 1 + the index in ``_REASON_ORDER`` of the first reason;
        ``terrain``: ``water`` (rows, W) bool (SCL water; None without SCL) and ``slope`` (rows, W) degrees
        (None without a DEM), for the skip rules (:mod:`imagery.inference.skip`).
        """
        win = Window(0, row, self.grid.width, rows)
        files = self.inp.scene.files
        out = np.empty((len(self.inp.model_bands), rows, self.grid.width), dtype=np.float32)
        reason = np.zeros((rows, self.grid.width), dtype=np.uint8)
        nodata = np.zeros((rows, self.grid.width), dtype=bool)
        dem_block = None
        slope_deg = None
        water = None
        if self.dem is not None:
            cache: dict[str, np.ndarray] = {}

            def read_dem(w: Window) -> np.ndarray:
                cache["block"] = self.dem.read(w)  # type: ignore[union-attr]
                cache["row0"] = np.array(int(w.row_off))
                return cache["block"]

            slope_deg = terrain_window(slope, read_dem, self.grid, win, spacing=self.spacing)
            r0 = row - int(cache["row0"])
            dem_block = cache["block"][r0 : r0 + rows]
        for i, band in enumerate(self.inp.model_bands):
            if band in self.inp.filled:
                out[i] = B10_FILL
            elif band == "slope":
                out[i] = slope_deg * model_unit_factor("slope")
            elif band == "DEM":
                out[i] = dem_block * model_unit_factor("DEM")  # type: ignore[operator]
            else:
                f = files[band]
                values = self.readers[band].read(win)
                out[i] = (values * f.scale + f.offset) * model_unit_factor(band)
                nodata |= ~np.isfinite(values)
        if self.scl is not None:
            scl = self.scl.read(win)
            nodata |= ~np.isfinite(scl)
            classes = np.where(np.isfinite(scl), scl, 0).astype(np.int64)
            water = classes == SCL_WATER
            for cls, code in self.scl_codes:
                reason[classes == cls] = code
        no_dem = np.zeros_like(nodata)
        if dem_block is not None:
            no_dem = ~np.isfinite(dem_block) | ~np.isfinite(slope_deg)
        reason[nodata] = 1
        reason[(reason == 0) & no_dem] = _reason_code("no_dem")
        out[:, reason > 0] = np.nan
        return out, reason, {"water": water, "slope": slope_deg}


Strip = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | None]]


class RollingStrips:
    """Consecutive, overlapping strips of rows, each scene row read once.

    ``strips(row, rows)`` returns what ``read(row, rows)`` returns (``(raw (C, rows, W), reason (rows, W),
    terrain {name: (rows, W) or None})``, as :meth:`_StripReader.read`), but reads only the rows the last
    strip did not hold and joins them to the rows it did: with tile 128 / overlap 64 every row belongs to
    two strips, and reading (warping 13 bands, the DEM and its slope onto the grid) was 43 % of a full tile's
    wall time with the width-8 model. The joined strip equals a direct read bit for bit: every read gives a pixel
    the same value whatever the window (:class:`common.geo.RasterOnGrid`: direct, upsampled, prewarped once or
    ``exact=True``; :func:`common.geo.terrain_window` reads a halo).
    ``rows_read`` counts the rows read.
    """

    def __init__(self, read: Callable[[int, int], Strip]) -> None:
        self._read = read
        self._last: tuple[int, int, Strip] | None = None
        self.rows_read = 0

    def __call__(self, row: int, rows: int) -> Strip:
        strip = None
        if self._last is not None:
            r0, n0, last = self._last
            if r0 <= row < r0 + n0:  # the first rows were in the last strip
                kept = min(r0 + n0, row + rows) - row
                old = _rows_of(last, row - r0, row - r0 + kept)
                strip = old if kept == rows else _join(old, self._fetch(r0 + n0, rows - kept))
        if strip is None:
            strip = self._fetch(row, rows)
        self._last = (row, rows, strip)
        return strip

    def _fetch(self, row: int, rows: int) -> Strip:
        self.rows_read += rows
        return self._read(row, rows)


def _rows_of(strip: Strip, a: int, b: int) -> Strip:
    raw, reason, terrain = strip
    return raw[:, a:b], reason[a:b], {k: None if v is None else v[a:b] for k, v in terrain.items()}


def _join(top: Strip, bottom: Strip) -> Strip:
    terrain = {
        k: None if v is None else np.concatenate([v, bottom[2][k]])  # type: ignore[list-item]
        for k, v in top[2].items()
    }
    return np.concatenate([top[0], bottom[0]], axis=1), np.concatenate([top[1], bottom[1]]), terrain


# ----------------------------------------------------------------------------- the loop
def _padded_terrain(
    terrain: dict[str, np.ndarray | None], th: int, tw: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(water, slope)`` of a strip padded like its bands (``_pad``), for the skip rules."""
    water, slope_deg = terrain.get("water"), terrain.get("slope")
    if water is not None:
        water = _pad(water[None].astype(np.float32), th, tw)[0] > 0
    if slope_deg is not None:
        slope_deg = _pad(slope_deg[None].astype(np.float32), th, tw)[0]
    return water, slope_deg


def _iter_rows(starts: list[int], height: int) -> Iterator[tuple[int, int]]:
    """``(start, final_end)``: after the tile row at ``start``, rows up to ``final_end`` are final."""
    for i, y in enumerate(starts):
        yield y, (starts[i + 1] if i + 1 < len(starts) else height)


def _pad(raw: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Reflect-pad ``(C, h, w)`` to at least ``(C, th, tw)`` (NaN stays NaN), for scenes smaller than a tile."""
    ph, pw = max(0, th - raw.shape[1]), max(0, tw - raw.shape[2])
    if not (ph or pw):
        return raw
    mode = "reflect" if raw.shape[1] > ph and raw.shape[2] > pw else "edge"
    return np.pad(raw, ((0, 0), (0, ph), (0, pw)), mode=mode)


def predict_windowed(
    segmenter: Segmenter,
    inp: _Inputs,
    cfg: SceneConfig,
    staging: Path,
    *,
    progress: bool = True,
    domain: DomainCheck | None = None,
) -> dict[str, Any]:
    """Run the tiles of the scene row by row; write the COGs into ``staging``; return counts, features, timings.

    ``domain``: sampled with every final row block's valid pixels (``imagery.inference.fitness``)."""
    grid = inp.grid
    height, width = grid.height, grid.width
    tile, overlap = cfg.tile, cfg.overlap
    th, tw = tile, tile
    rows_at = tile_starts(max(height, tile), tile, overlap)
    cols_at = tile_starts(max(width, tile), tile, overlap)
    weight = blend_weights(tile, overlap)
    threshold = segmenter.threshold if cfg.threshold is None else float(cfg.threshold)
    buf_h = max(tile, height)
    acc = np.zeros((min(buf_h, tile), max(width, tile)), dtype=np.float32)
    norm = np.zeros_like(acc)
    skip_buf = np.zeros(acc.shape, dtype=np.uint8)  # skip-rule code of the pixels of tiles not run (0: none)
    rules = SkipRules(cfg.skip, cfg.flat_slope_deg)
    tiles_skipped = dict.fromkeys(SKIP_REASONS, 0)
    polys = StripPolygonizer(grid, min_area_m2=cfg.min_area_m2)
    counts = {"valid": 0, "landslide": 0, **{r: 0 for r in _REASON_ORDER}}
    counts.update({f"skipped_{name}": 0 for name in SKIP_REASONS[1:]})
    timings = {"read_s": 0.0, "read_wait_s": 0.0, "infer_s": 0.0, "predict_s": 0.0, "write_s": 0.0, "polygon_s": 0.0}
    n_tiles = len(rows_at) * len(cols_at)
    predicted = 0
    bar = tqdm(total=n_tiles, unit="tile", desc="tiles", dynamic_ncols=True, disable=not progress, smoothing=0.1)
    tags = {"scene_id": inp.scene.scene_id, "model": cfg.model_uri}
    n_lanes = lane_count(segmenter, cfg.lanes)  # each batch split over the cores, one torch thread each
    segmenter = with_lanes(segmenter, n_lanes)
    with (
        _StripReader(inp, cfg) as reader,
        ThreadPoolExecutor(max_workers=1, initializer=lower_this_thread) as pool,  # fills idle cores
        CogWriter(
            staging / "probability.tif",
            grid,
            "float32",
            np.nan,
            tags={**tags, "units": "probability 0-1", "long_name": "landslide probability", "threshold": threshold},
            qml=probability_qml(threshold),
            cache_mb=SCENE_CACHE_MB,
        ) as pw,
        CogWriter(
            staging / "mask.tif",
            grid,
            "uint8",
            255,
            tags={
                **tags,
                "values": "0 no landslide, 1 landslide, 255 nodata",
                "threshold": threshold,
                "long_name": f"landslide mask (probability >= {threshold:.3g})",
                "units": "class",
                CLASSES_TAG: json.dumps(MASK_CLASSES),
            },
            colormap={0: "#ffffff00", 1: "#e31a1c"},
            qml=classes_qml({0: ("#ffffff00", MASK_CLASSES["0"]), 1: ("#e31a1c", MASK_CLASSES["1"])}),
            cache_mb=SCENE_CACHE_MB,
        ) as mw,
    ):
        strips = RollingStrips(reader.read)

        def load(y: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | None], float]:
            t0 = time.perf_counter()
            rows = min(th, height - y) if height >= th else height
            raw, reason, terrain = strips(y if height >= th else 0, rows)
            return raw, reason, terrain, time.perf_counter() - t0

        written = 0
        t_loop = time.perf_counter()
        pending = pool.submit(load, rows_at[0])
        for k, (y, final_end) in enumerate(_iter_rows(rows_at, height)):
            check_cancelled()  # a service job past its timeout stops here
            t0 = time.perf_counter()
            raw, reason, terrain, read_s = pending.result()
            timings["read_wait_s"] += time.perf_counter() - t0  # the model idle, waiting for the reader
            timings["read_s"] += read_s
            if k + 1 < len(rows_at):
                pending = pool.submit(load, rows_at[k + 1])
            t0 = time.perf_counter()
            padded = _pad(raw, th, tw)
            valid_pad = _pad(reason[None].astype(np.float32), th, tw)[0] == 0
            boxes, skipped = plan_tiles(cols_at, tw, valid_pad, *_padded_terrain(terrain, th, tw), rules)
            for x, why in skipped.items():
                tiles_skipped[why] += 1
                if why != "masked":  # masked pixels stay nodata; water/flat ones become 0 with their reason
                    np.maximum(skip_buf[:, x : x + tw], reason_code(why), out=skip_buf[:, x : x + tw])
            for start in range(0, len(boxes), cfg.batch_size):
                chunk = boxes[start : start + cfg.batch_size]
                batch = np.stack([padded[:, :, x : x + tw] for x in chunk])
                t1 = time.perf_counter()
                prob = segmenter.predict(batch, batch_size=len(chunk), tta=cfg.tta, threshold=threshold)["prob"]
                timings["predict_s"] += time.perf_counter() - t1
                for x, p in zip(chunk, prob, strict=True):
                    add_tile(acc, norm, p, weight, 0, x)
                predicted += len(chunk)
                bar.update(len(chunk))
            bar.update(len(cols_at) - len(boxes))
            timings["infer_s"] += time.perf_counter() - t0
            # rows [written, final_end) are final; they sit at buffer rows [written - y, final_end - y)
            t0 = time.perf_counter()
            n_final = final_end - written
            if n_final > 0:
                lo = written - y
                with np.errstate(invalid="ignore", divide="ignore"):
                    prob_rows = (acc[lo : lo + n_final, :width] / norm[lo : lo + n_final, :width]).astype(np.float32)
                rsn = reason[lo : lo + n_final]
                if domain is not None:
                    domain.add(raw[:, lo : lo + n_final], rsn == 0)
                prob_rows[rsn > 0] = np.nan
                prob_rows[~np.isfinite(prob_rows)] = np.nan
                skip_rows = np.where(np.isnan(prob_rows) & (rsn == 0), skip_buf[lo : lo + n_final, :width], 0)
                prob_rows[skip_rows > 0] = 0.0  # skipped by rule, not run: probability 0, counted by reason
                for name in SKIP_REASONS[1:]:
                    counts[f"skipped_{name}"] += int((skip_rows == reason_code(name)).sum())
                ok = np.isfinite(prob_rows)
                mask_rows = np.where(ok, (prob_rows > threshold).astype(np.uint8), np.uint8(255))
                win = Window(0, written, width, n_final)
                pw.write(prob_rows, win)
                mw.write(mask_rows, win)
                counts["valid"] += int(ok.sum())
                counts["landslide"] += int((mask_rows == 1).sum())
                per_reason = np.bincount(rsn.ravel(), minlength=len(_REASON_ORDER) + 1)
                for i, name in enumerate(_REASON_ORDER, start=1):
                    counts[name] += int(per_reason[i])
                timings["write_s"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                polys.add(mask_rows == 1, written, prob_rows)
                timings["polygon_s"] += time.perf_counter() - t0
                written = final_end
            # roll the buffers so that row `final_end` (the next tile row's start) is buffer row 0
            shift = final_end - y
            if 0 < shift < acc.shape[0]:
                acc[:-shift] = acc[shift:]
                norm[:-shift] = norm[shift:]
                skip_buf[:-shift] = skip_buf[shift:]
                acc[-shift:] = 0
                norm[-shift:] = 0
                skip_buf[-shift:] = 0
            else:
                acc[:] = 0
                norm[:] = 0
                skip_buf[:] = 0
        bar.close()
        timings["loop_s"] = time.perf_counter() - t_loop
        if counts["valid"] == 0:
            masked = _shares(counts, height * width)
            raise UserError(
                f"--scene {inp.scene.source}: every pixel is masked ({_describe(masked)}); nothing to predict"
            )
        t0 = time.perf_counter()
    features = polys.features()
    timings["polygon_s"] += time.perf_counter() - t0
    return {
        "counts": counts,
        "features": features,
        "timings": timings,
        "tiles": {
            "total": n_tiles,
            "predicted": predicted,
            "skipped": n_tiles - predicted,
            "skipped_by": tiles_skipped,
        },
        "threshold": threshold,
        "rows_read": strips.rows_read,
        "lanes": n_lanes,
    }


def model_busy(timings: dict[str, float], segmenter: Segmenter) -> dict[str, float | None]:
    """How much of the tile loop's wall time (``loop_s``: reading, tiling, prediction, blending, writing,
    polygons) the model was busy: ``predict_share`` (``Segmenter.predict``: preprocessing and the network),
    ``network_share`` (the network alone, when an engine path counts it), ``read_wait_share`` (waiting for
    the reader thread). The reader runs one strip ahead in a thread; blending, writing and polygons run in
    the loop, so ``1 - predict_share`` is what overlapping them more could still gain."""
    loop = timings.get("loop_s") or 0.0
    net = getattr(segmenter, "model", None)
    stats = net.stats() if hasattr(net, "stats") else {}
    if loop <= 0:
        return {"predict_share": None, "network_share": None, "read_wait_share": None}
    return {
        "predict_share": round(timings["predict_s"] / loop, 4),
        "network_share": round(stats["seconds"] / loop, 4) if stats.get("seconds") else None,
        "read_wait_share": round(timings["read_wait_s"] / loop, 4),
    }


def _shares(counts: dict[str, int], total: int) -> dict[str, float]:
    return {r: counts[r] / total for r in _REASON_ORDER if counts.get(r)}


def _describe(shares: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in shares.items()) or "nothing"


def precheck_scl(scene: SceneSource, scl_mask: list[int]) -> float | None:
    """Share of the SCL layer in masked classes (read at its own resolution); an all-masked scene fails early."""
    if not scene.has_scl:
        return None
    f = scene.files["SCL"]
    data = read_raster(f.path, f.index).array
    masked = np.isin(data, np.array(scl_mask))
    share = float(masked.mean())
    if share >= 1.0:
        classes = {SCL_CLASSES.get(int(c), str(c)): float((data == c).mean()) for c in np.unique(data)}
        raise UserError(
            f"--scene {scene.source}: every pixel is masked by SCL ({_describe(classes)}); nothing to predict"
        )
    return share


# ----------------------------------------------------------------------------- overview
def _nice_length(metres: float) -> float:
    exp = 10 ** math.floor(math.log10(metres))
    for m in (5, 2, 1):
        if m * exp <= metres:
            return m * exp
    return exp


def write_overview(path: Path, inp: _Inputs, prob_path: Path, features: list[Feature], threshold: float) -> Path:
    """``overview.png``: RGB (B4, B3, B2), probability overlay, polygon outlines, CRS axes and a scale bar."""
    grid = inp.grid
    f = max(1, math.ceil(max(grid.width, grid.height) / OVERVIEW_MAX_PX))
    ov = Grid(grid.crs, grid.transform @ Affine.scale(f), math.ceil(grid.width / f), math.ceil(grid.height / f))
    rgb = None
    if all(b in inp.scene.files for b in ("B4", "B3", "B2")):
        chans = []
        for b in ("B4", "B3", "B2"):
            bf = inp.scene.files[b]
            with RasterOnGrid(bf.path, ov, "average", bands=bf.index, exact=False) as r:
                chans.append(r.read() * bf.scale + bf.offset)
        rgb = np.stack(chans, axis=-1)
        finite = np.isfinite(rgb)
        lo, hi = np.nanpercentile(rgb, [2, 98]) if finite.any() else (0.0, 1.0)
        rgb = np.clip((np.nan_to_num(rgb, nan=lo) - lo) / max(hi - lo, 1e-6), 0, 1)
    with RasterOnGrid(prob_path, ov, "average", exact=False, bands=1) as r:
        prob = r.read()
    left, bottom, right, top = ov.bounds
    geographic = ov.is_geographic
    unit = 1.0 if geographic else 1000.0
    extent = (left / unit, right / unit, bottom / unit, top / unit)
    fig = Figure(figsize=(8, 8 * ov.height / max(ov.width, 1) + 0.6))
    ax = fig.subplots()
    if rgb is not None:
        ax.imshow(rgb, extent=extent, interpolation="nearest")
    else:
        ax.imshow(np.zeros(ov.shape), cmap="gray", extent=extent)
    over = np.ma.masked_where(~np.isfinite(prob) | (prob < 0.1), prob)
    im = ax.imshow(over, cmap="inferno", vmin=0, vmax=1, alpha=0.6, extent=extent, interpolation="nearest")
    nodata = np.ma.masked_where(np.isfinite(prob), np.ones(ov.shape))
    ax.imshow(nodata, cmap="Greys", vmin=0, vmax=2, alpha=0.5, extent=extent, interpolation="nearest")
    outlines = []
    for feat in sorted(features, key=lambda f: -f.properties["area_m2"])[:MAX_OUTLINES]:
        for g in getattr(feat.geometry, "geoms", [feat.geometry]):
            outlines.append(np.asarray(g.exterior.coords) / unit)
    ax.add_collection(LineCollection(outlines, colors="cyan", linewidths=0.8))
    fig.colorbar(im, ax=ax, fraction=0.035, label="P(landslide)")
    if geographic:
        ax.set_xlabel("longitude (degrees)")
        ax.set_ylabel("latitude (degrees)")
    else:
        ax.set_xlabel(f"easting (km, {grid.crs})")
        ax.set_ylabel(f"northing (km, {grid.crs})")
    px_m = float(pixel_size_m(ov)[1][ov.height // 2])
    bar_m = _nice_length(px_m * ov.width / 5)
    bar_units = bar_m / (px_m / ov.res[0]) / unit
    x0 = extent[0] + 0.05 * (extent[1] - extent[0])
    y0 = extent[2] + 0.05 * (extent[3] - extent[2])
    ax.plot([x0, x0 + bar_units], [y0, y0], color="white", linewidth=4)
    ax.plot([x0, x0 + bar_units], [y0, y0], color="black", linewidth=2)
    label = f"{bar_m / 1000:g} km" if bar_m >= 1000 else f"{bar_m:g} m"
    ax.text(x0, y0 + 0.02 * (extent[3] - extent[2]), label, color="white", fontsize=9, fontweight="bold")
    ax.set_title(
        f"{inp.scene.scene_id} {inp.scene.date or ''}: {len(features)} landslide polygon(s), threshold {threshold:.2f}",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- the command's library call
def _check_cfg(cfg: SceneConfig) -> None:
    if cfg.tile < 16 or cfg.tile % 16:
        raise UserError(f"--tile must be a multiple of 16 (the network halves it 4 times), got {cfg.tile}")
    if not 0 <= cfg.overlap < cfg.tile:
        raise UserError(f"--overlap must be in [0, {cfg.tile - 1}], got {cfg.overlap}")
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.lanes < 0:
        raise UserError(f"--lanes must be >= 0 (0: one per core where the path allows it, 1: none), got {cfg.lanes}")
    if cfg.min_area_m2 < 0:
        raise UserError(f"--min-area-m2 must be >= 0, got {cfg.min_area_m2}")
    if cfg.dem and not Path(cfg.dem).exists() and "://" not in cfg.dem:
        raise UserError(f"--dem {cfg.dem}: not found (expected a DEM GeoTIFF)")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")


def run_scene(
    cfg: SceneConfig,
    *,
    tracking_uri: str | None = None,
    segmenter: Segmenter | None = None,
    log: Callable[[str], None] = print,
) -> SceneResult:
    """Predict the scene of ``cfg`` (module docstring) and log metrics and outputs to the active MLflow run.

    Everything is checked (scene, bands, model, DEM coverage) before the first tile is predicted.
    """
    t_start = time.perf_counter()
    _check_cfg(cfg)
    scene = open_scene(cfg.scene, bands=cfg.bands, image_scale=cfg.image_scale)
    # the automatic engine is chosen once the run's length is known (a whole tile also tries torch.compile)
    deferred = segmenter is None and cfg.runtime == "auto" and not str(cfg.model_uri).endswith(".onnx")
    if segmenter is None:
        runtime = "torch" if deferred else cfg.runtime
        segmenter = load_segmenter(cfg.model_uri, device=cfg.device, tracking_uri=tracking_uri, runtime=runtime)
    fixed = getattr(segmenter, "fixed_size", None)
    if fixed and fixed != cfg.tile:  # an ONNX file exported with a fixed tile size: tile at its size
        log(f"note: the model takes {fixed} px tiles only; --tile {cfg.tile} replaced by {fixed}")
        cfg = dataclasses.replace(cfg, tile=fixed, overlap=min(cfg.overlap, fixed // 2))
    inp = plan_inputs(scene, segmenter, cfg, log)
    grid = inp.grid
    fit = check_resolution(
        scene_pixel_m(grid),
        segmenter.meta,
        allow=cfg.allow_resolution_mismatch,
        source=scene.scene_id or str(cfg.scene),  # the id: assess passes a scene cut into a temporary folder
        model=cfg.model_uri,
        min_area_m2=cfg.min_area_m2,
    )
    fit["training_data"] = check_training_data(
        segmenter.meta, scene_synthetic=bool(scene.metadata.get("synthetic")), model=cfg.model_uri
    )
    scl_share = precheck_scl(scene, cfg.scl_mask)
    domain = DomainCheck(inp.model_bands, getattr(segmenter.meta, "band_stats", None), grid.width * grid.height)
    if deferred:  # after every check: a refused run measures nothing
        tiles = count_tiles(grid.height, grid.width, cfg.tile, cfg.overlap)
        segmenter = apply_engine(segmenter, "auto", workload=tiles, log=log, lanes=cfg.lanes)
    out = Path(cfg.out)
    with atomic_dir(out) as staging:  # every output appears together, or none does
        log(
            f"scene {scene.scene_id} ({scene.date or 'date unknown'}, {scene.product}): {grid.width}x{grid.height} px "
            f"in {grid.crs}, bands {', '.join(inp.model_bands)}; scale from {scene.scale_source}"
        )
        res = predict_windowed(segmenter, inp, cfg, staging, progress=cfg.progress, domain=domain)
        domain.record(fit, cfg.model_uri)
        fit["flagged_share"] = check_flagged_share(res["counts"]["landslide"], res["counts"]["valid"])
        features = res["features"]
        t0 = time.perf_counter()
        write_geojson(features, staging / "landslides.geojson", grid.crs)
        write_gpkg(
            features,
            staging / "landslides.gpkg",
            grid.crs,
            layer="landslides",
            style_qml=landslides_by_confidence_qml(res["threshold"]),
        )
        res["timings"]["vector_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_overview(staging / "overview.png", inp, staging / "probability.tif", features, res["threshold"])
        res["timings"]["overview_s"] = time.perf_counter() - t0
        total = grid.width * grid.height
        counts = res["counts"]
        tiles = res["tiles"]
        infer_s = res["timings"]["infer_s"]
        res["timings"]["total_s"] = time.perf_counter() - t_start
        summary = {
            "status": "ok",
            "scene_id": scene.scene_id,
            "date": scene.date,
            "product": scene.product,
            "processing_baseline": scene.processing_baseline,
            "scene": str(cfg.scene),
            "scene_kind": scene.kind,
            "scale_source": scene.scale_source,
            "crs": grid.crs,
            "transform": list(tuple(grid.transform)[:6]),
            "width": grid.width,
            "height": grid.height,
            "pixel_size_m": [float(v[grid.height // 2]) for v in pixel_size_m(grid)][::-1],
            "bands_used": list(inp.model_bands),
            "bands_filled": {b: B10_FILL for b in inp.filled},
            "bands_reprojected": inp.reprojected,
            "units": segmenter.meta.units,
            "dem": cfg.dem,
            "dem_resampling": inp.dem_resampling if cfg.dem else None,
            "scl_masked_classes": sorted(set(cfg.scl_mask)) if scene.has_scl else None,
            "scl_masked_share_native": scl_share,
            "valid_pixels": counts["valid"],
            "masked_share": 1.0 - counts["valid"] / total,
            "masked_by": _shares(counts, total),
            "skip_rules": {"enabled": cfg.skip, "flat_slope_deg": cfg.flat_slope_deg if cfg.dem else None},
            "skipped_share": sum(counts[f"skipped_{n}"] for n in SKIP_REASONS[1:]) / total,
            "skipped_by": {n: counts[f"skipped_{n}"] / total for n in SKIP_REASONS[1:]},
            "landslide_pixels": counts["landslide"],
            "landslide_count": len(features),
            "landslide_area_m2": float(sum(f.properties["area_m2"] for f in features)),
            "min_area_m2": cfg.min_area_m2,
            "model_uri": cfg.model_uri,
            "threshold": res["threshold"],
            "tile": cfg.tile,
            "overlap": cfg.overlap,
            "batch_size": cfg.batch_size,
            "lanes": res["lanes"],  # each batch split over this many one-core lanes (imagery.inference.lanes)
            "device": str(segmenter.device),
            "engine": log_engine_summary(segmenter),
            "tiles": tiles,
            "tiles_per_s": tiles["predicted"] / infer_s if infer_s > 0 else None,
            "rows_read": res["rows_read"],  # each scene row once (RollingStrips), however much the tiles overlap
            "model_busy": model_busy(res["timings"], segmenter),
            "timings_s": {k: round(v, 3) for k, v in res["timings"].items()},
            "outputs": list(OUTPUT_NAMES),
            "model_fit": fit,
        }
        with atomic_write(staging / "summary.json") as fh:
            json.dump(summary, fh, indent=2)
    paths = {name: out / name for name in OUTPUT_NAMES}
    _log_run(summary, paths, cfg)
    return SceneResult(out, summary, paths)


def _log_run(summary: dict[str, Any], paths: dict[str, Path], cfg: SceneConfig) -> None:
    if mlflow.active_run() is None:
        return
    metrics = {
        "valid_pixels": summary["valid_pixels"],
        "masked_share": summary["masked_share"],
        "landslide_count": summary["landslide_count"],
        "landslide_area_m2": summary["landslide_area_m2"],
        "landslide_pixels": summary["landslide_pixels"],
        "tiles_predicted": summary["tiles"]["predicted"],
        "skipped_share": summary["skipped_share"],
        **{f"masked_{k}": v for k, v in summary["masked_by"].items()},
        **{f"time_{k}": v for k, v in summary["timings_s"].items()},
    }
    if summary["tiles_per_s"]:
        metrics["tiles_per_s"] = summary["tiles_per_s"]
    fit = summary.get("model_fit", {})
    metrics.update(fit_metrics(fit))
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    mlflow.log_params(
        {"scene_id": summary["scene_id"], "scene_date": str(summary["date"]), "scene_crs": summary["crs"]}
    )
    for name, path in paths.items():
        if name.endswith(".tif") and not cfg.log_rasters:
            continue
        mlflow.log_artifact(str(path))


def scene_summary_line(result: SceneResult) -> str:
    """The line the command prints at the end."""
    s = result.summary
    return (
        f"{s['landslide_count']} landslide polygon(s), {s['landslide_area_m2'] / 1e4:.2f} ha, in {s['scene_id']} "
        f"({s['masked_share']:.1%} masked: {_describe(s['masked_by'])}; {s['skipped_share']:.1%} skipped by rule"
        f"{': ' + _describe(s['skipped_by']) if s['skipped_share'] else ''}); {s['tiles']['predicted']} tiles in "
        f"{s['timings_s']['total_s']:.1f} s; outputs in {result.out}"
    )


__all__ = [
    "SceneResult",
    "plan_inputs",
    "precheck_scl",
    "predict_windowed",
    "run_scene",
    "scene_summary_line",
    "write_overview",
]
