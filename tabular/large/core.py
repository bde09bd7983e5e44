"""The binned core: LightGBM on row subsets of one binned matrix, shared by the engines and the tuner.

:func:`build_binned_dataset` bins a table once, streaming (:class:`tabular.large.source.TableSequence`);
:func:`fit_on_positions` trains on a subset of its rows with the class weight (:func:`class_weight`) and
early stopping on an inner split (:func:`inner_split`: whole blocks or groups held out);
:func:`early_stopping_iteration` finds the iteration that rule keeps for a booster trained without it
(the Dask engine). Nothing here logs to MLflow.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import warnings
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from common.cli import UserError
from tabular.calibration import odds_factor
from tabular.large.source import FeatureEncoder, TableSequence, TableSource
from tabular.spatial import (
    inner_block_split,
)


def release_memory() -> None:
    """Collect Python garbage and hand the C heap's free pages back to the system (glibc ``malloc_trim``).

    LightGBM allocates and frees a fold's binned subset, gradients and scores in the C heap; glibc keeps
    freed chunks mapped, so without the trim the resident size after a fold stays at the fold's peak and
    the next fold (or the refit) adds to it. No-op where the C library has no ``malloc_trim``."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is not None:
        trim(0)


def subset_rows(ds: lgb.Dataset, positions: np.ndarray) -> lgb.Dataset:
    """A LightGBM subset of ``ds`` holding ``positions`` (sorted), without a Python list of millions of ints."""
    sub = ds.subset([0])
    sub.used_indices = np.ascontiguousarray(np.sort(positions), dtype=np.int32)
    return sub


def inner_split(
    positions: np.ndarray, groups: np.ndarray | None, labels: np.ndarray, valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) of training ``positions`` for early stopping: whole groups held out
    (:func:`tabular.spatial.inner_block_split`), else a seeded random ``valid_fraction`` of the rows."""
    if groups is not None:
        return inner_block_split(positions, groups, labels, valid_fraction, seed)
    mask = np.random.default_rng(seed).random(len(positions)) < valid_fraction
    return positions[~mask], positions[mask]


def class_weight(y: np.ndarray) -> float:
    """``n_neg / n_pos`` of labels ``y`` (the positives' ``scale_pos_weight``; n_pos counted at least 1)."""
    n_pos = int(y.sum())
    return (len(y) - n_pos) / max(n_pos, 1)


def build_binned_dataset(
    src: TableSource,
    encoder: FeatureEncoder,
    labels: np.ndarray,
    categorical_idx: list[int],
    *,
    rows: np.ndarray | None = None,
    max_bin: int = 255,
    batch_rows: int = 262_144,
    sample_rows: int = 200_000,
    seed: int = 42,
    num_threads: int = 0,
) -> lgb.Dataset:
    """LightGBM's binned matrix of the table (``rows`` only, when given), built in two streaming passes."""
    seq = TableSequence(src, encoder, batch_rows, rows=rows)
    ds = lgb.Dataset(
        seq,
        label=np.asarray(labels, dtype=np.float32),
        feature_name=encoder.features,
        categorical_feature=categorical_idx,
        free_raw_data=True,
        params={
            "max_bin": max_bin,
            "verbosity": -1,
            "bin_construct_sample_cnt": int(sample_rows),
            "data_random_seed": seed,
            "num_threads": num_threads,
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds.construct()
    return ds


@dataclass(frozen=True)
class FoldFit:
    """One trained fold: the booster, rounds kept and the odds factor of its class weight."""

    booster: lgb.Booster
    best_iteration: int
    factor: float
    params: dict[str, Any]


def train_early_stopped(
    params: dict[str, Any], train: lgb.Dataset, valid: lgb.Dataset, *, rounds: int, patience: int
) -> lgb.Booster:
    """``lgb.train`` for at most ``rounds`` rounds, stopped when the first metric on ``valid`` (named ``"valid"``)
    has not improved for ``patience`` rounds (the fold fit and the tuner's trials)."""
    return lgb.train(
        params,
        train,
        num_boost_round=rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(patience, first_metric_only=True, verbose=False)],
    )


def fit_on_positions(
    ds: lgb.Dataset,
    positions: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    params: dict[str, Any],
    *,
    rounds: int,
    early_stopping: int,
    valid_fraction: float,
    weights: bool,
    seed: int,
) -> FoldFit:
    """Train on the dataset rows ``positions`` (early stopping on whole groups held out of them)."""
    y = labels[positions]
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise UserError("a training fold has a single class (expected positives and negatives in every fold)")
    w = class_weight(y) if weights else 1.0
    p = dict(params, scale_pos_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if early_stopping > 0:
            tr, va = inner_split(positions, groups, labels, valid_fraction, seed)
            dtr, dva = subset_rows(ds, tr), subset_rows(ds, va)
            del tr, va  # the subsets hold their own int32 copies
            booster = train_early_stopped(p, dtr, dva, rounds=rounds, patience=early_stopping)
            best = int(booster.best_iteration or booster.current_iteration())
        else:
            dtr = subset_rows(ds, positions) if len(positions) != ds.num_data() else ds
            booster = lgb.train(p, dtr, num_boost_round=rounds)
            best = rounds
    del dtr, y
    if early_stopping > 0:
        del dva
    release_memory()  # the fold's binned subsets, gradients and scores leave the resident set
    return FoldFit(booster, best, odds_factor(1.0, w), p)


def early_stopping_iteration(
    booster: lgb.Booster, X: np.ndarray, y: np.ndarray, rounds: int, patience: int
) -> tuple[int, float]:
    """The iteration LightGBM's ``early_stopping(patience, first_metric_only=True)`` callback would keep,
    for a ``booster`` already trained ``rounds`` rounds, scored on the validation rows ``(X, y)``.

    The validation ROC-AUC (the first metric of :meth:`tabular.config.LGBMParams.booster_params`) is
    computed after every iteration from the accumulated raw scores; as the callback does, a score counts
    as better only when strictly higher, and the scan stops ``patience`` iterations after the best.
    Returns ``(best_iteration, best_auc)`` (iterations counted from 1). Used by engines whose
    training cannot stop early (the Dask engine), so that both engines keep the same iteration.
    """
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415 - only where an engine emulates early stopping

    raw = np.zeros(len(y), dtype=np.float64)
    best, best_it = -np.inf, 0
    n_trees = min(rounds, booster.current_iteration())
    for it in range(n_trees):
        raw += booster.predict(X, start_iteration=it, num_iteration=1, raw_score=True)
        auc = float(roc_auc_score(y, raw))
        if auc > best:
            best, best_it = auc, it
        elif it - best_it >= patience:
            break
    return best_it + 1, best
