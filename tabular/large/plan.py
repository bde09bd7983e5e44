"""The plan of a large-table training run: what the table resolves to, before any feature is read.

:func:`plan_table` opens the table (:class:`tabular.large.source.TableSource`), picks the target,
coordinate, group and feature columns, reads the labels with the one target contract of both paths
(:func:`tabular.data.encode_target_array`: 0/1, booleans, two words, ``--positive``), the levels of the
categorical columns and makes the folds (spatial blocks, groups or stratified; :mod:`tabular.spatial`).
:func:`subsample_keep` decides the rows of negative subsampling. Both engines start from the same plan,
so they use the same rows, labels and folds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.cli import UserError
from common.fingerprint import Fingerprint
from tabular.config import TrainTabularConfig
from tabular.data import encode_target_array
from tabular.large.source import TableSource, discover_levels
from tabular.spatial import (
    coords_to_metres,
    looks_like_lonlat,
    make_blocks,
    resolve_cv_mode,
    spatial_fold_of_rows,
    stratified_fold_of_rows,
)

MAX_CATEGORICAL_LEVELS = 10_000


@dataclass(frozen=True)
class TablePlan:
    """What a training table resolved to: columns, labels, folds and sampling (one value per row arrays)."""

    source: TableSource
    target: str
    features: list[str]
    categorical: list[str]
    levels: dict[str, list[str]]
    coords: tuple[str, str] | None
    y: np.ndarray  # int8 (rows,)
    fold: np.ndarray | None  # int16 (rows,) or None without CV
    blocks: np.ndarray | None  # block/group id per row (for the inner split), or None
    cv_mode: str
    cv_reason: str
    n_blocks: int
    table_negative_rate: float


def _resolve_target(src: TableSource, cfg: TrainTabularConfig) -> str:
    if cfg.target in src.columns:
        return cfg.target
    if src.meta.target and src.meta.target in src.columns and cfg.target == "landslide":
        return src.meta.target
    raise UserError(f"{src.path}: target column {cfg.target!r} not found (columns: {src.columns[:25]})")


def _resolve_coords(src: TableSource, cfg: TrainTabularConfig) -> tuple[str, str] | None:
    if cfg.cv.coords:
        if len(cfg.cv.coords) != 2:
            raise UserError(f"--xy expects two column names X,Y, got {cfg.cv.coords}")
        src.require(cfg.cv.coords, "--xy column(s)")
        return (cfg.cv.coords[0], cfg.cv.coords[1])
    return src.coord_columns()


def plan_table(cfg: TrainTabularConfig) -> TablePlan:
    """Open the table, pick columns, read labels/coordinates and make the folds (no feature data read)."""
    src = TableSource(cfg.data)
    target = _resolve_target(src, cfg)
    coords = _resolve_coords(src, cfg)
    if cfg.group is not None:
        src.require([cfg.group], "--group column")
    src.require(cfg.drop, "--drop column(s)")
    mode, reason = resolve_cv_mode(cfg.cv.mode, coords is not None, cfg.group)
    non_features = {target, *cfg.drop, *src.partition_columns}
    if cfg.group:
        non_features.add(cfg.group)
    if cfg.id_column:
        non_features.add(cfg.id_column)
    if coords is not None:
        non_features.update(coords)  # coordinates are never features
    features = [c for c in src.columns if c not in non_features]
    if not features:
        raise UserError(f"{src.path}: no feature columns left after dropping target, coordinate and --drop columns")
    bad = [c for c in features if not (src.is_numeric(c) or src.is_textual(c))]
    if bad:
        raise UserError(
            f"{src.path}: column {bad[0]!r} has type {src.field(bad[0]).type} (expected numbers, classes or text); "
            "drop it with --drop"
        )
    if cfg.categorical is not None:
        src.require(cfg.categorical, "--categorical column(s)")
        categorical = [c for c in cfg.categorical if c in features]
    else:
        meta_cats = set(src.meta.categorical)
        categorical = [c for c in features if c in meta_cats or src.is_dictionary(c) or src.is_textual(c)]
    text_numeric = [c for c in features if src.is_textual(c) and c not in categorical]
    if text_numeric:
        raise UserError(f"{src.path}: text column {text_numeric[0]!r} must be categorical (name it in --categorical)")
    cols = [target] + ([cfg.group] if cfg.group else []) + (list(coords) if coords else [])
    data = src.read_columns(cols)
    y_raw = data[target]
    y: np.ndarray | None = None
    if len(y_raw) and cfg.positive is None and y_raw.dtype.kind in "iub":
        if 0 <= int(y_raw.min()) and int(y_raw.max()) <= 1:  # 0/1 integers: the common case, not factorized
            y = y_raw.astype(np.int8)
    if y is None:  # anything else: the in-memory path's contract (tabular.data.encode_target), --positive too
        try:
            y = encode_target_array(y_raw, target, cfg.positive)
        except UserError as exc:
            raise UserError(f"{src.path}: {exc}") from None
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        which = "positive" if n_pos == 0 else "negative"
        raise UserError(
            f"{src.path}: target column {target!r} has no {which} rows (zero {which}s after sampling; "
            "expected both classes)"
        )
    levels = discover_levels(src, categorical, limit=MAX_CATEGORICAL_LEVELS)
    fold = blocks = None
    n_blocks = 0
    k = cfg.cv.n_folds
    if k == 1:
        raise UserError("--folds must be 0 (no cross-validation) or >= 2")
    if mode == "spatial":
        cx, cy = data[coords[0]], data[coords[1]]
        xm, ym = coords_to_metres(cx, cy, lonlat=looks_like_lonlat(cx, cy))
        b = make_blocks(xm, ym, y, cfg.cv.block_size_m)
        blocks, n_blocks = b.ids, b.n_blocks
        if k >= 2:
            fold = spatial_fold_of_rows(b, k, cfg.seed)
    elif mode == "group":
        g = data[cfg.group]
        if g.dtype.kind == "f" and np.isnan(g).any():
            raise UserError(f"{src.path}: --group column {cfg.group!r} has missing values")
        uniq, inv = np.unique(g, return_inverse=True)
        n_blocks = len(uniq)
        blocks = inv.astype(np.int32)
        if k >= 2:
            if n_blocks < k:
                raise UserError(f"--group column has {n_blocks} groups, fewer than the {k} CV folds")
            from tabular.spatial import assign_block_folds  # noqa: PLC0415 - only for grouped CV

            cells = np.bincount(blocks, minlength=n_blocks)
            pos = np.bincount(blocks, weights=y.astype(np.float64), minlength=n_blocks).astype(np.int64)
            fold = assign_block_folds(cells, pos, k, cfg.seed)[blocks]
    elif k >= 2:
        if min(n_pos, len(y) - n_pos) < k:
            raise UserError(f"the smaller class has {min(n_pos, len(y) - n_pos)} rows, fewer than the {k} CV folds")
        fold = stratified_fold_of_rows(y, k, cfg.seed)
    del data
    return TablePlan(
        src,
        target,
        features,
        categorical,
        levels,
        coords,
        y,
        fold,
        blocks,
        mode,
        reason,
        n_blocks,
        src.meta.negative_rate,
    )


def table_fingerprint(src: TableSource) -> Fingerprint:
    """A metadata fingerprint of a dataset (relative part names, sizes, schema, row count); not its bytes."""
    h = hashlib.sha256()
    base = src.path if src.path.is_dir() else src.path.parent
    for f in src.files:
        h.update(f"{f.relative_to(base)}\0{f.stat().st_size}\0".encode())
    h.update(str(src.schema.remove_metadata()).encode())
    h.update(str(src.num_rows).encode())
    return Fingerprint(h.hexdigest(), src.num_rows, len(src.columns), str(src.path))


def plan_params(plan: TablePlan) -> dict[str, Any]:
    """The run parameters describing a plan (columns, folds, sampling), as both engines log them."""
    return {
        "cv_mode": plan.cv_mode,
        "cv_mode_reason": plan.cv_reason,
        "cv_blocks": plan.n_blocks,
        "target_column": plan.target,
        "coords": ",".join(plan.coords) if plan.coords else "",
        "n_features": len(plan.features),
        "n_positive": int(plan.y.sum()),
        "features": ",".join(plan.features)[:6000],
        "categorical_features": ",".join(plan.categorical)[:6000],
        "table_negative_rate": plan.table_negative_rate,
    }


def subsample_keep(y: np.ndarray, per_positive: float, seed: int) -> tuple[np.ndarray, float]:
    """Row positions kept by negative subsampling (all positives, negatives at rate q) and the realized rate."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    q = min(1.0, per_positive * n_pos / max(n_neg, 1))
    rng = np.random.default_rng(seed + 7919)
    keep = (y == 1) | (rng.random(len(y)) < q)
    kept_neg = int(keep.sum()) - n_pos
    if kept_neg == 0:
        raise UserError("negative subsampling kept zero negatives (expected some; raise --negatives-per-positive)")
    return np.flatnonzero(keep), kept_neg / n_neg
