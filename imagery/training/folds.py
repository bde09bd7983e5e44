"""Fold and validation positions of a :class:`~imagery.data.patches.PatchSet` (indices into the set, not ids):
the seeded k-fold, the study's contiguous natural-order blocks and the validation split carved from a fold's
training part. The protocols (:mod:`imagery.training.protocol`) choose among them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from imagery.data.patches import PatchSet
from imagery.data.splits import contiguous_folds, holdout_split, kfold_splits, natural_order


def holdout_positions(
    ids: np.ndarray,
    val_fraction: float,
    seed: int,
    labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(train, val)`` of ``imagery.data.splits.holdout_split`` (stratified by patch label when possible).

    With ``groups`` (tiles of one georeferenced chip share a group) whole groups go to one side, so no chip
    is both trained on and validated on; with a single group it falls back to a split of the patches.
    """
    if groups is not None and len(np.unique(groups)) >= 2:
        uniq = np.unique(groups)
        gtr, gva = holdout_split(uniq, val_fraction, seed)
        return np.flatnonzero(np.isin(groups, gtr)), np.flatnonzero(np.isin(groups, gva))
    strat = None
    if labels is not None:
        _, counts = np.unique(labels, return_counts=True)
        n_val = int(np.ceil(val_fraction * len(ids)))
        if len(counts) == 2 and counts.min() >= 2 and n_val >= 2 and len(ids) - n_val >= 2:
            strat = labels
    tr, va = holdout_split(ids, val_fraction, seed, stratify=strat)
    return _positions(ids, tr), _positions(ids, va)


def kfold_positions(ids: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Positions ``(train, test)`` per fold of ``imagery.data.splits.kfold_splits`` (which returns ids)."""
    return [(_positions(ids, tr), _positions(ids, te)) for tr, te in kfold_splits(ids, k, seed)]


def natural_fold_positions(patches: PatchSet, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Positions ``(train, test)`` of the study's folds: the patches in the natural order of their file names
    (``imagery.data.splits.natural_order``; patches without paths in id order), cut into ``k`` contiguous blocks,
    fold i (0-based; the study's fold i + 1) testing on ``[int((k-1-i)/k N), int((k-i)/k N))``. One-line
    error when the names do not sort naturally."""
    names = [Path(p).name for p in patches.paths] if patches.paths else [f"image_{int(i)}.h5" for i in patches.ids]
    order = natural_order(names)
    if len(order) < k:
        raise UserError(f"--folds {k}: only {len(order)} labelled patches")
    return [(np.sort(order[tr]), np.sort(order[te])) for tr, te in contiguous_folds(np.arange(len(order)), k)]


def _positions(ids: np.ndarray, sel_ids: Any) -> np.ndarray:
    """Positions in ``ids`` of the patch ids ``sel_ids`` (in that order)."""
    pos = {int(v): i for i, v in enumerate(np.asarray(ids))}
    return np.array([pos[int(v)] for v in np.asarray(sel_ids)], dtype=np.int64)
