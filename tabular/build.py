"""Conditioning-factor rasters and a landslide inventory to a cell table (a Parquet dataset).

:func:`build_table` (``python -m pipelines.build_table``):

* **Grid.** Every factor is read onto one grid: ``grid`` (a reference raster), else the first raster's
  own grid, by :class:`common.geo.RasterOnGrid` (reprojection on the fly; ``bilinear`` for continuous
  rasters, ``nearest`` for the ``categorical`` ones; each raster's nodata respected). A column is
  named after the file stem, or ``NAME=path``.
* **Terrain.** ``dem`` with ``terrain`` derives factors from the DEM on the grid with true metres per
  pixel (:mod:`common.geo.terrain`, formulas there): ``slope`` (degrees, Horn), ``aspect`` (columns
  ``aspect_sin``, ``aspect_cos`` of the downslope direction), ``curvature`` (``plan_curvature``,
  ``profile_curvature``, 1/m, Zevenbergen & Thorne), ``tpi`` (m, elevation minus the mean of the 8
  neighbours), ``tri`` (m, Riley), ``roughness`` (m, max - min of 3x3), ``twi`` (ln(a / tan b), D8
  flow on the whole DEM). Block-wise with a halo, so blocks equal a whole-DEM computation.
* **Distances.** ``distance_to={"faults": "faults.shp"}`` adds the distance in metres from each cell
  centre to the nearest feature (:func:`common.geo.distance_to`).
* **Inventory.** Polygons or points (GeoPackage, shapefile, GeoJSON, CSV with lon/lat; any CRS,
  reprojected), filtered with ``inventory_filter`` (OGR SQL, e.g. ``"Year_obs >= 2005"``), or a label
  raster (cells > 0 are landslides). A cell is positive when its centre is inside a polygon, or within
  ``buffer_m`` of a point or line (a point without buffer marks the cell it falls in).
* **Cells kept.** Cells where any factor is nodata are left out (the susceptibility map is nodata
  there), unless ``keep_nodata``. ``negatives_per_positive=K`` keeps every positive cell and draws
  negatives uniformly at random, each valid negative cell kept with probability
  ``q = min(1, K * positives / negatives)`` (counts over the grid, seeded per block); ``q`` is stored
  as ``negative_rate`` so probabilities can be prior-corrected (:mod:`tabular.calibration`), and the
  realised counts go to ``_build_summary.json`` in the folder. Without it every valid cell is kept
  (``negative_rate`` 1).
* **Output.** A Parquet dataset folder: ``x``, ``y`` (cell centres in the grid CRS, float64), the
  factors (float32; categorical ones as int32 class values), ``landslide`` (int8), with the grid's
  CRS/transform, the categorical columns and the sampling in the schema metadata
  (:data:`tabular.large.source.META_KEY`). Written block by block (``block_cells`` cells at a time, one
  Parquet row group each, parts of ``rows_per_part`` rows) under a temporary name, renamed at the end.

Memory: one block of every raster, plus whole-grid arrays only where a factor needs the whole grid:
the inventory mask (1 byte per cell), each distance layer (4 bytes per cell plus SciPy's distance
transform) and TWI (about 40 bytes per cell of the DEM while computing flow accumulation).

Errors a user can fix raise one-line :class:`common.cli.UserError` (exit 2, nothing written): rasters
that do not overlap (both named, with extents), an inventory outside the grid or without features
after filtering, a raster or inventory without CRS, a categorical raster with more than
:data:`MAX_LEVELS` classes, no positive or no negative cell left after sampling.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import shapely

from common.cli import UserError
from common.geo import (
    Grid,
    RasterOnGrid,
    coverage_fraction,
    distance_to,
    iter_windows,
    pixel_size_m,
    rasterize,
    read_vector,
    terrain_window,
    transform_geometries,
)
from common.geo import terrain as geo_terrain
from tabular.config import TERRAIN_CHOICES
from tabular.large.source import PartWriter, atomic_dataset_dir, table_metadata

MAX_LEVELS = 255
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".asc")
TARGET = "landslide"


@dataclass
class BuildTableConfig:
    """Everything ``python -m pipelines.build_table`` was asked to do (paths as given, distances in metres)."""

    rasters: list[str]
    inventory: str
    out: str
    grid: str | None = None
    categorical: list[str] = field(default_factory=list)
    dem: str | None = None
    terrain: list[str] = field(default_factory=list)
    distance_to: list[str] = field(default_factory=list)
    inventory_filter: str | None = None
    negatives_per_positive: float | None = None
    buffer_m: float = 0.0
    keep_nodata: bool = False
    block_cells: int = 1_000_000
    rows_per_part: int = 5_000_000
    seed: int = 42
    experiment: str = "build_table"
    run_name: str | None = None
    tracking_uri: str | None = None


@dataclass(frozen=True)
class BuildTableResult:
    """What was written: folder, rows, positive and negative cells, nodata cells skipped, the grid, timing."""

    out: str
    rows: int
    positives: int
    negatives: int
    nodata_cells: int
    negative_rate: float
    columns: list[str]
    height: int
    width: int
    crs: str
    seconds: float

    @property
    def cells_per_second(self) -> float:
        return self.height * self.width / self.seconds if self.seconds > 0 else 0.0


def _named(items: Sequence[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if "=" in item:
            name, path = item.split("=", 1)
            name, path = name.strip(), path.strip()
        else:
            path = item.strip()
            name = Path(path).stem
        if not name or not path:
            raise UserError(f"{what} {item!r}: expected PATH or NAME=PATH")
        out.append((name, path))
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{what}: duplicate column name(s) {dup}; name them with NAME=PATH")
    return out


def _extent(grid: Grid) -> str:
    b = grid.bounds
    return f"({b.left:.6g}, {b.bottom:.6g}, {b.right:.6g}, {b.top:.6g}) in {grid.crs}"


def _check_overlap(grid: Grid, grid_name: str, rasters: list[tuple[str, str]]) -> None:
    for _name, path in rasters:
        other = Grid.from_raster(path)
        if coverage_fraction(grid, tuple(other.bounds), other.crs) <= 0.0:
            raise UserError(
                f"raster {path} (extent {_extent(other)}) does not overlap the grid of {grid_name} "
                f"(extent {_extent(grid)}); expected rasters of the same area"
            )


def _check_levels(name: str, path: str, grid: Grid, rows: int) -> None:
    """Raise when a categorical raster has more than :data:`MAX_LEVELS` classes on the grid."""
    seen: set[float] = set()
    with RasterOnGrid(path, grid, "nearest", 1) as r:
        for win in iter_windows(grid, rows):
            vals = r.read(win)
            seen.update(np.unique(vals[np.isfinite(vals)]).tolist())
            if len(seen) > MAX_LEVELS:
                break
    if len(seen) > MAX_LEVELS:
        raise UserError(
            f"categorical raster {path} ({name}) has more than {MAX_LEVELS} classes ({len(seen)}+ found); LightGBM "
            f"bins at most {MAX_LEVELS} categories per feature and would merge the rest silently: merge classes, or "
            f"leave {name} out of --categorical to use it as a number"
        )
    bad = [v for v in seen if v < 0 or not float(v).is_integer()]
    if bad:
        raise UserError(f"categorical raster {path} ({name}) has value {bad[0]!r}; expected non-negative class codes")


def _inventory_mask(cfg: BuildTableConfig, grid: Grid, log: Callable[[str], None]) -> np.ndarray:
    path = Path(cfg.inventory)
    if path.suffix.lower() in RASTER_SUFFIXES:
        if cfg.inventory_filter:
            raise UserError(f"--inventory-filter applies to vector inventories, not the raster {path}")
        other = Grid.from_raster(path)
        if coverage_fraction(grid, tuple(other.bounds), other.crs) <= 0.0:
            raise UserError(
                f"inventory raster {path} (extent {_extent(other)}) lies outside the grid (extent {_extent(grid)})"
            )
        mask = np.zeros(grid.shape, dtype=np.uint8)
        with RasterOnGrid(path, grid, "nearest", 1) as r:
            for win in iter_windows(grid, max(1, 4_000_000 // grid.width)):
                block = r.read(win)
                sl = slice(win.row_off, win.row_off + win.height)
                mask[sl] = np.nan_to_num(block, nan=0.0) > 0
        if not mask.any():
            raise UserError(f"inventory raster {path} has no landslide cell (value > 0) on the grid")
        log(f"inventory: label raster {path}, {int(mask.sum()):,} landslide cells")
        return mask
    vec = read_vector(path, where=cfg.inventory_filter)
    types = {g.geom_type for g in vec.geometries}
    mask = rasterize(vec.geometries, grid, crs=vec.crs, buffer_m=cfg.buffer_m)
    if not mask.any():
        b = shapely.total_bounds(transform_geometries(vec.geometries, vec.crs, grid.crs))
        raise UserError(
            f"inventory {path} has {len(vec.geometries)} feature(s) but none falls on the grid "
            f"(inventory extent ({b[0]:.6g}, {b[1]:.6g}, {b[2]:.6g}, {b[3]:.6g}), grid extent {_extent(grid)}); "
            "expected landslides inside the rasters' area"
        )
    log(
        f"inventory: {len(vec.geometries)} feature(s) ({', '.join(sorted(types))}) in {vec.crs}"
        + (f" where {cfg.inventory_filter}" if cfg.inventory_filter else "")
        + (f", buffered {cfg.buffer_m:g} m" if cfg.buffer_m else "")
        + f" -> {int(mask.sum()):,} landslide cells"
    )
    return mask


TERRAIN_COLUMNS = {
    "slope": ["slope"],
    "aspect": ["aspect_sin", "aspect_cos"],
    "curvature": ["plan_curvature", "profile_curvature"],
    "tpi": ["tpi"],
    "tri": ["tri"],
    "roughness": ["roughness"],
    "twi": ["twi"],
}


def _terrain_block(
    names: list[str], dem_read: Callable[[Any], np.ndarray], grid: Grid, win: Any, spacing: Any, twi: Any
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "slope":
            out["slope"] = terrain_window(geo_terrain.slope, dem_read, grid, win, spacing=spacing)
        elif name == "aspect":
            out["aspect_sin"], out["aspect_cos"] = terrain_window(
                geo_terrain.aspect, dem_read, grid, win, spacing=spacing
            )
        elif name == "curvature":
            out["plan_curvature"] = terrain_window(geo_terrain.plan_curvature, dem_read, grid, win, spacing=spacing)
            out["profile_curvature"] = terrain_window(
                geo_terrain.profile_curvature, dem_read, grid, win, spacing=spacing
            )
        elif name == "tpi":
            out["tpi"] = terrain_window(geo_terrain.tpi, dem_read, grid, win)
        elif name == "tri":
            out["tri"] = terrain_window(geo_terrain.tri, dem_read, grid, win)
        elif name == "roughness":
            out["roughness"] = terrain_window(geo_terrain.roughness, dem_read, grid, win)
        elif name == "twi":
            out["twi"] = twi[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width]
    return out


def build_table(
    cfg: BuildTableConfig,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> BuildTableResult:
    """Build the cell table (module docstring); ``progress(done_blocks, total_blocks)`` after each block."""
    t0 = time.perf_counter()
    rasters = _named(cfg.rasters, "--rasters")
    distances = _named(cfg.distance_to, "--distance-to")
    if not rasters and not cfg.dem:
        raise UserError("expected at least one factor raster (--rasters) or a --dem with --terrain")
    bad_terrain = [t for t in cfg.terrain if t not in TERRAIN_CHOICES]
    if bad_terrain:
        raise UserError(f"--terrain {bad_terrain[0]!r} is not one of {', '.join(TERRAIN_CHOICES)}")
    if cfg.terrain and not cfg.dem:
        raise UserError("--terrain needs --dem DEM.tif")
    if cfg.dem and not cfg.terrain:
        raise UserError("--dem needs --terrain with at least one of " + ", ".join(TERRAIN_CHOICES))
    names = [n for n, _ in rasters]
    unknown = [c for c in cfg.categorical if c not in names]
    if unknown:
        raise UserError(f"--categorical {unknown} not among the raster columns {names}")
    if cfg.negatives_per_positive is not None and not cfg.negatives_per_positive > 0:
        raise UserError(f"--negatives-per-positive must be > 0, got {cfg.negatives_per_positive}")
    if cfg.buffer_m < 0:
        raise UserError(f"--buffer-m must be >= 0, got {cfg.buffer_m}")
    ref_name = cfg.grid or (rasters[0][1] if rasters else cfg.dem)
    grid = Grid.from_raster(ref_name)
    _check_overlap(grid, str(ref_name), rasters + ([("dem", cfg.dem)] if cfg.dem else []))
    rows_per_block = max(1, int(cfg.block_cells) // grid.width)
    for name, path in rasters:
        if name in cfg.categorical:
            _check_levels(name, path, grid, rows_per_block)
    log(f"grid: {grid.height} x {grid.width} cells of {grid.res[0]:g} x {grid.res[1]:g} ({grid.crs}) from {ref_name}")
    mask = _inventory_mask(cfg, grid, log)
    dist_arrays = {}
    for name, path in distances:
        vec = read_vector(path)
        dist_arrays[name] = distance_to(vec.geometries, grid, crs=vec.crs)
    terrain_cols = [c for t in TERRAIN_CHOICES if t in cfg.terrain for c in TERRAIN_COLUMNS[t]]
    feature_cols = names + terrain_cols + [n for n, _ in distances]
    dup = sorted({c for c in feature_cols if feature_cols.count(c) > 1} | ({"x", "y", TARGET} & set(feature_cols)))
    if dup:
        raise UserError(f"column name(s) {dup} used twice or reserved; name rasters with NAME=PATH")
    # negative sampling rate from the grid's counts (the realised rate is stored)
    n_pos_grid = int(mask.sum())
    n_neg_grid = mask.size - n_pos_grid
    q = (
        1.0
        if cfg.negatives_per_positive is None
        else min(1.0, cfg.negatives_per_positive * n_pos_grid / max(n_neg_grid, 1))
    )
    schema = pa.schema(
        [pa.field("x", pa.float64()), pa.field("y", pa.float64())]
        + [pa.field(c, pa.int32() if c in cfg.categorical else pa.float32()) for c in feature_cols]
        + [pa.field(TARGET, pa.int8())]
    )
    sampling = {
        "mode": "all" if cfg.negatives_per_positive is None else "negatives_per_positive",
        "negatives_per_positive": cfg.negatives_per_positive,
        "negative_rate": q,  # the design probability of keeping a negative cell (exact, for prior correction)
        "positive_rate": 1.0,
        "seed": cfg.seed,
    }
    schema = schema.with_metadata(
        table_metadata(
            grid=grid,
            target=TARGET,
            coords=("x", "y"),
            categorical=cfg.categorical,
            sampling=sampling,
            generator="pipelines.build_table",
            inventory=str(cfg.inventory),
            inventory_filter=cfg.inventory_filter,
            buffer_m=cfg.buffer_m,
            rasters={n: str(p) for n, p in rasters},
            dem=cfg.dem,
            terrain=list(cfg.terrain),
        )
    )
    spacing = pixel_size_m(grid) if cfg.dem else None
    twi_full = None
    n_rows = n_pos = n_neg_kept = n_neg_valid = n_nodata = 0
    windows = list(iter_windows(grid, rows_per_block))
    with atomic_dataset_dir(cfg.out) as tmp, contextlib.ExitStack() as opened:
        writer = opened.enter_context(PartWriter(tmp, schema, rows_per_part=cfg.rows_per_part))
        readers = [
            opened.enter_context(RasterOnGrid(path, grid, "nearest" if name in cfg.categorical else "bilinear", 1))
            for name, path in rasters
        ]
        dem = opened.enter_context(RasterOnGrid(cfg.dem, grid, "bilinear", 1)) if cfg.dem else None
        if dem is not None and "twi" in cfg.terrain:
            twi_full = geo_terrain.twi(dem.read(), spacing[0], spacing[1])
        for i, win in enumerate(windows):
            sl = slice(win.row_off, win.row_off + win.height)
            cols: dict[str, np.ndarray] = {}
            for (name, _), r in zip(rasters, readers, strict=True):
                cols[name] = r.read(win)
            if dem is not None:
                cols.update(_terrain_block(cfg.terrain, dem.read, grid, win, spacing, twi_full))
            for name, arr in dist_arrays.items():
                cols[name] = arr[sl]
            stack = [cols[c] for c in feature_cols]
            valid = np.ones((win.height, win.width), dtype=bool)
            for a in stack:
                valid &= np.isfinite(a)
            n_nodata += int((~valid).sum())
            keep = np.ones_like(valid) if cfg.keep_nodata else valid.copy()
            lab = mask[sl].astype(bool)
            n_neg_valid += int((keep & ~lab).sum())
            if q < 1.0:
                keep &= lab | (np.random.default_rng([cfg.seed, i]).random(valid.shape) < q)
            n_neg_kept += int((keep & ~lab).sum())
            rr, cc = np.nonzero(keep)
            if len(rr):
                xs, ys = grid.cell_centres(rr + win.row_off, cc + win.col_off)
                arrays = [pa.array(xs), pa.array(ys)]
                for c in feature_cols:
                    v = cols[c][rr, cc]
                    if c in cfg.categorical:
                        arrays.append(pa.array(v.astype(np.int32), mask=~np.isfinite(v)))
                    else:
                        arrays.append(pa.array(v.astype(np.float32)))
                y = lab[rr, cc].astype(np.int8)
                arrays.append(pa.array(y))
                n_pos += int(y.sum())
                n_rows += len(y)
                writer.write(pa.RecordBatch.from_arrays(arrays, schema=schema))
            if progress is not None:
                progress(i + 1, len(windows))
        if n_pos == 0 or n_neg_kept == 0:
            which = "positive" if n_pos == 0 else "negative"
            raise UserError(
                f"no {which} cell left after sampling ({n_pos} positive, {n_neg_kept} negative cells with valid "
                f"factors); expected both (check the inventory, the rasters' nodata and --negatives-per-positive)"
            )
        summary = {
            "positive_cells": n_pos,
            "negative_cells_valid": n_neg_valid,
            "negative_cells_kept": n_neg_kept,
            "nodata_cells": n_nodata,
            "rows": n_rows,
        }
        (tmp / "_build_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return BuildTableResult(
        str(cfg.out),
        n_rows,
        n_pos,
        n_neg_kept,
        n_nodata,
        q,
        ["x", "y", *feature_cols, TARGET],
        grid.height,
        grid.width,
        grid.crs,
        time.perf_counter() - t0,
    )
