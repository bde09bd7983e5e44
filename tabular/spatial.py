"""Spatial cross-validation: cells grouped into square blocks, whole blocks assigned to folds.

Neighbouring cells of a susceptibility table share terrain, rainfall and often the same landslide
polygon, so random folds put near-copies of a test cell into training and overstate the score.
Here each cell goes to the block ``(floor((x - x0) / B), floor((y - y0) / B))`` of side ``B`` metres
(``--block-size``, measured from the south-west corner ``(x0, y0)`` of the cells), and folds are made
of whole blocks, so two cells closer than one block side sit in different folds only where a block
border runs between them. The inner early-stopping split of each training fold holds out whole
blocks too.

Coordinates must be in metres (a projected CRS such as UTM); longitude/latitude columns are first
mapped to metres with an equirectangular projection about their mean latitude
(:func:`coords_to_metres`; accurate to about 1 % for a region a few hundred km across, plenty for
blocks).

Fold assignment (:func:`assign_block_folds`) is deterministic for a seed: blocks are shuffled, then
taken in decreasing order of positives and each given to the fold with the fewest positives so far
(ties: fewest cells), which balances positives across folds like scikit-learn's
``StratifiedGroupKFold`` does, in O(blocks log blocks), for tens of millions of cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.cli import UserError

EARTH_RADIUS_M = 6_371_008.8


def coords_to_metres(x: np.ndarray, y: np.ndarray, *, lonlat: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` in metres: unchanged for projected coordinates, equirectangular for lon/lat degrees."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not lonlat:
        return x, y
    lat0 = math.radians(float(np.nanmean(y)))
    k = math.pi / 180.0 * EARTH_RADIUS_M
    return x * k * math.cos(lat0), y * k


def looks_like_lonlat(x: np.ndarray, y: np.ndarray) -> bool:
    """True when every coordinate is within longitude/latitude ranges (|x| <= 180, |y| <= 90)."""
    fx, fy = np.asarray(x)[np.isfinite(x)], np.asarray(y)[np.isfinite(y)]
    return bool(len(fx) and np.abs(fx).max() <= 180.0 and np.abs(fy).max() <= 90.0)


@dataclass(frozen=True)
class Blocks:
    """Block of every cell: ``ids`` (int64 per row, dense 0..n_blocks-1), the block side ``size_m``,
    ``n_blocks``, the study area's ``extent_m`` (width, height) and per-block cell and positive counts."""

    ids: np.ndarray
    size_m: float
    n_blocks: int
    extent_m: tuple[float, float]
    cells: np.ndarray
    positives: np.ndarray


def make_blocks(x: np.ndarray, y: np.ndarray, labels: np.ndarray, size_m: float, *, origin=None) -> Blocks:
    """Assign each cell (``x``, ``y`` in metres, one row each) to a square block of side ``size_m``.

    ``origin``: the blocks' south-west corner (default: the smallest x and y). Raises
    :class:`UserError` for a non-positive block size or missing coordinates.
    """
    if not size_m > 0:
        raise UserError(f"--block-size must be > 0 metres, got {size_m}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) == 0:
        raise UserError("no rows to split into spatial blocks")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise UserError("coordinate columns have missing values (expected x and y for every row of spatial CV)")
    x0, y0 = (float(x.min()), float(y.min())) if origin is None else origin
    bx = np.floor((x - x0) / size_m).astype(np.int64)
    by = np.floor((y - y0) / size_m).astype(np.int64)
    key = by * (int(bx.max()) + 1) + bx
    uniq, ids = np.unique(key, return_inverse=True)
    ids = ids.astype(np.int64 if len(uniq) > 2**31 - 1 else np.int32)
    cells = np.bincount(ids, minlength=len(uniq))
    positives = np.bincount(ids, weights=np.asarray(labels, dtype=np.float64), minlength=len(uniq)).astype(np.int64)
    extent = (float(x.max() - x0), float(y.max() - y0))
    return Blocks(ids, float(size_m), len(uniq), extent, cells, positives)


def assign_block_folds(cells: np.ndarray, positives: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold (0..n_folds-1) of each block, balancing positives then cells across folds (see module docstring)."""
    n = len(cells)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    order = perm[np.argsort(-positives[perm], kind="stable")]
    fold_pos = np.zeros(n_folds, dtype=np.int64)
    fold_cells = np.zeros(n_folds, dtype=np.int64)
    out = np.empty(n, dtype=np.int16)
    # blocks with positives one by one (few); the rest by cells, in bulk for speed
    with_pos = order[positives[order] > 0]
    for b in with_pos:
        f = int(np.lexsort((fold_cells, fold_pos))[0])
        out[b] = f
        fold_pos[f] += positives[b]
        fold_cells[f] += cells[b]
    rest = order[positives[order] == 0]
    rest = rest[np.argsort(-cells[rest], kind="stable")]
    for b in rest:
        f = int(np.argmin(fold_cells))
        out[b] = f
        fold_cells[f] += cells[b]
    return out


def spatial_fold_of_rows(blocks: Blocks, n_folds: int, seed: int) -> np.ndarray:
    """Fold of every row (int8/16), whole blocks per fold. Raises :class:`UserError` when there are
    fewer blocks than folds (block larger than the study area) or a fold would get no positive."""
    if blocks.n_blocks < n_folds:
        w, h = blocks.extent_m
        raise UserError(
            f"--block-size {blocks.size_m:g} m gives {blocks.n_blocks} block(s) over the {w / 1000:.2f} x "
            f"{h / 1000:.2f} km study area, fewer than the {n_folds} CV folds; use a smaller --block-size"
        )
    n_pos_blocks = int((blocks.positives > 0).sum())
    if n_pos_blocks < n_folds:
        raise UserError(
            f"only {n_pos_blocks} of the {blocks.n_blocks} spatial blocks of {blocks.size_m:g} m contain a "
            f"landslide, fewer than the {n_folds} CV folds; use a smaller --block-size or fewer --folds"
        )
    fold_of_block = assign_block_folds(blocks.cells, blocks.positives, n_folds, seed)
    return fold_of_block[blocks.ids]


def inner_block_split(
    rows: np.ndarray, block_ids: np.ndarray, labels: np.ndarray, valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split training ``rows`` into (train, valid) row indices by whole blocks, about ``valid_fraction``
    of the positives in valid; falls back to a stratified row split when there are too few blocks."""
    b = block_ids[rows]
    uniq, inv = np.unique(b, return_inverse=True)
    cells = np.bincount(inv, minlength=len(uniq))
    pos = np.bincount(inv, weights=labels[rows].astype(np.float64), minlength=len(uniq)).astype(np.int64)
    k = max(2, int(round(1.0 / max(min(valid_fraction, 0.5), 1e-3))))
    if len(uniq) >= k and int((pos > 0).sum()) >= 2:
        part = assign_block_folds(cells, pos, k, seed)
        valid_block = part[inv] == 0
        tr, va = rows[~valid_block], rows[valid_block]
        y_tr, y_va = labels[tr], labels[va]
        if y_tr.min() != y_tr.max() and y_va.min() != y_va.max():
            return tr, va
    rng = np.random.default_rng(seed)
    va_mask = np.zeros(len(rows), dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(labels[rows] == cls)
        take = max(1, int(round(len(idx) * valid_fraction)))
        va_mask[rng.choice(idx, size=min(take, len(idx) - 1) if len(idx) > 1 else 0, replace=False)] = True
    return rows[~va_mask], rows[va_mask]


def stratified_fold_of_rows(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of every row for stratified k-fold (each class dealt round-robin after a shuffle)."""
    y = np.asarray(labels)
    out = np.empty(len(y), dtype=np.int16)
    rng = np.random.default_rng(seed)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        out[idx] = np.arange(len(idx)) % n_folds
    return out


def resolve_cv_mode(mode: str, has_coords: bool, group: str | None) -> tuple[str, str]:
    """``(mode, reason)``: what ``"auto"`` means for this table, with the reason logged as a parameter."""
    if mode != "auto":
        if mode == "spatial" and not has_coords:
            raise UserError("--cv spatial needs coordinate columns x, y (or name them with --xy X,Y)")
        if mode == "group" and group is None:
            raise UserError("--cv group needs --group COLUMN")
        return mode, "requested"
    if group is not None:
        return "group", "default: --group given"
    if has_coords:
        return "spatial", "default: x/y columns present and no --group"
    return "stratified", "default: no coordinates and no --group"


def frame_coords(columns: list[str], wanted: list[str] | None) -> tuple[str, str] | None:
    """The coordinate columns of a table: ``wanted`` (checked), else ``x``, ``y`` when both exist."""
    if wanted:
        if len(wanted) != 2:
            raise UserError(f"--xy expects two column names X,Y, got {wanted}")
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise UserError(f"--xy column(s) {missing} not found (columns: {columns[:20]})")
        return (wanted[0], wanted[1])
    return ("x", "y") if {"x", "y"} <= set(columns) else None


def spatial_folds(
    x: np.ndarray, y: np.ndarray, labels: np.ndarray, block_size_m: float, n_folds: int, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], Blocks]:
    """(train_idx, valid_idx) pairs of whole spatial blocks for an in-memory table, and the blocks."""
    xm, ym = coords_to_metres(x, y, lonlat=looks_like_lonlat(x, y))
    blocks = make_blocks(xm, ym, labels, block_size_m)
    fold = spatial_fold_of_rows(blocks, n_folds, seed)
    idx = np.arange(len(fold))
    return [(idx[fold != i], idx[fold == i]) for i in range(n_folds)], blocks
