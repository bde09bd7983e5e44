"""The train/validate/test protocol behind ``python -m pipelines.train_imagery`` (single run or k-fold).

:func:`run_folds`, per fold: carve a validation split from the training patches
(``imagery.data.splits.holdout_split``), fit the normaliser on the training part, train
(``imagery.training.trainer.Trainer``), tune the threshold on the validation split, log the segmenter
(``imagery.inference.serving.log_segmenter``), overlays and a precision-recall curve, then score the
held-out test fold. Out-of-fold patch probabilities (:mod:`common.oof`) come from the test folds
(k-fold) or from the validation split (single run, fold 0).

Every function here logs into the MLflow run the command opened; none changes MLflow's global state.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from common.atomic import atomic_write
from common.cli import UserError
from common.fingerprint import Fingerprint, fingerprint_array
from common.oof import OOF_COLUMNS, log_oof, oof_frame
from common.tracking import log_fingerprint, set_run_kind, tracked_run
from imagery.data import BANDS, PatchSet, load_patches
from imagery.data.splits import holdout_split, kfold_splits
from imagery.data.synthetic import write_synthetic_l4s
from imagery.device import resolve_device
from imagery.inference.evaluate import evaluate_segmenter, save_pr_curve
from imagery.inference.metrics import segmentation_metrics
from imagery.inference.predict import save_overlay
from imagery.inference.segmenter import Segmenter, SegmenterMeta
from imagery.inference.serving import log_segmenter
from imagery.models import create_model
from imagery.training.config import TrainConfig
from imagery.training.losses import build_criterion
from imagery.training.trainer import Trainer
from imagery.transforms.preprocess import Preprocessor, fit_normalizer


# ------------------------------------------------------------------------------- splits
def holdout_positions(
    ids: np.ndarray, val_fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(train, val)`` of ``imagery.data.splits.holdout_split`` (stratified by patch label when possible)."""
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


def _positions(ids: np.ndarray, sel_ids: Any) -> np.ndarray:
    """Positions in ``ids`` of the patch ids ``sel_ids`` (in that order)."""
    pos = {int(v): i for i, v in enumerate(np.asarray(ids))}
    return np.array([pos[int(v)] for v in np.asarray(sel_ids)], dtype=np.int64)


# ------------------------------------------------------------------------------- data
def load_training_data(cfg: TrainConfig, tmp: Path) -> tuple[PatchSet, Fingerprint]:
    """The labelled patches to train on and their fingerprint (synthetic ones without ``--data``)."""
    d = cfg.data
    if d.path is None:
        root = write_synthetic_l4s(tmp / "synthetic", n_patches=d.n_synthetic, seed=cfg.seed, size=d.synthetic_size)
        patches = load_patches(root, "train", layout="plain", require_masks=True)
        source = f"synthetic(n={d.n_synthetic}, size={d.synthetic_size}, seed={cfg.seed})"
    else:
        patches = load_patches(d.path, d.split, layout=d.layout, require_masks=True)
        source = str(d.path)
    if len(patches) < 2:
        raise UserError(
            f"{d.path or 'synthetic data'}: {len(patches)} labelled patch(es); need at least 2 to train and validate"
        )
    return patches, fingerprint_array(np.asarray(patches.images), source=source)


# ------------------------------------------------------------------------------- one fold
@dataclass(frozen=True)
class FoldResult:
    """One trained fold: its segmenter URI, validation/test metrics and out-of-fold rows."""

    fold: int
    model_uri: str
    threshold: float
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    oof: pd.DataFrame
    history: list[dict[str, float]] = field(default_factory=list)


def train_fold(
    cfg: TrainConfig,
    train_set: PatchSet,
    test_set: PatchSet | None,
    fold: int,
    *,
    log_flavour: bool = True,
    data_digest: str = "",
) -> FoldResult:
    """Train on ``train_set`` (validation carved from it), evaluate on ``test_set``; logs to the active MLflow run."""
    device = resolve_device(cfg.device)
    tr_pos, va_pos = holdout_positions(train_set.ids, cfg.data.val_fraction, cfg.seed + fold, train_set.patch_labels())
    if len(va_pos) == 0 or len(tr_pos) == 0:
        raise UserError(f"--val-fraction {cfg.data.val_fraction} leaves an empty split of {len(train_set)} patches")
    tr, va = train_set.subset(tr_pos), train_set.subset(va_pos)
    pre = Preprocessor(cfg.model.channel_set)
    with torch.no_grad():
        tx = pre.transform_all(np.asarray(tr.images), device)  # engineered once, normalised in place below
        pre.normalizer = fit_normalizer(cfg.data.normalize, tx)
        tx = pre.normalize(tx)
        vx = pre.transform_all(np.asarray(va.images), device)
    normalizer = pre.normalizer
    torch.manual_seed(cfg.seed + fold)
    model = create_model(cfg.model.name, **cfg.model.create_kwargs())
    criterion = build_criterion(cfg.loss.name, cfg.model.head, **cfg.loss.params())

    def log_epoch(metrics: dict[str, float], epoch: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _finite(v)}, step=epoch)

    resume_key = {**cfg.resume_key(), "data": data_digest, "fold": str(fold)}
    trainer = Trainer(
        cfg, model, criterion, tx, tr.masks, vx, va.masks, device=device, log_metrics=log_epoch, resume_key=resume_key
    )
    result = trainer.fit()
    meta = SegmenterMeta(
        model_name=cfg.model.name,
        model_kwargs=cfg.model.create_kwargs(),
        channel_set=cfg.model.channel_set,
        threshold=result.threshold,
        normalizer=normalizer.to_dict() if normalizer is not None else None,
        band_order=list(BANDS),
        head=cfg.model.head,
        tta=cfg.tta,
        vote=cfg.vote,
        patch_size=int(tr.images.shape[-1]),
    )
    uri = log_segmenter(result.model, meta, input_example=vx[:1].detach().cpu().numpy(), log_flavour=log_flavour)
    val_metrics = segmentation_metrics(result.val_probs, va.masks, result.threshold, result.val_patch_probs)
    mlflow.log_metrics({f"val_{k}": v for k, v in val_metrics.items() if _finite(v)})
    mlflow.log_metrics({"threshold": result.threshold, "best_epoch": float(result.best_epoch + 1)})
    _log_table(result.threshold_table, "threshold_sweep.csv")
    _log_plots(cfg, va, result.val_probs, result.threshold)

    test_metrics: dict[str, float] = {}
    if test_set is not None and len(test_set):
        seg = Segmenter(result.model, meta, device)
        test_metrics, pred = evaluate_segmenter(
            seg, np.asarray(test_set.images), test_set.masks, batch_size=cfg.eval_batch_size
        )
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items() if _finite(v)})
        oof = oof_frame(test_set.ids, test_set.patch_labels(), pred["patch_prob"], fold)
    else:
        oof = oof_frame(va.ids, va.patch_labels(), result.val_patch_probs, fold)
    return FoldResult(fold, uri, result.threshold, val_metrics, test_metrics, oof, result.history)


# ------------------------------------------------------------------------------- all folds
@dataclass(frozen=True)
class FoldsResult:
    """A whole experiment: the (parent) run it logged to, segmenter URIs (one per fold), summary metrics
    and the out-of-fold table."""

    run_id: str
    model_uris: list[str]
    metrics: dict[str, float]
    oof: pd.DataFrame
    folds: list[FoldResult]


RUN_FILE = "run.json"


def checkpoint_run_id(checkpoint_dir: str | None) -> str | None:
    """The MLflow run a checkpoint folder belongs to (written when the run started), or ``None``."""
    if not checkpoint_dir:
        return None
    path = Path(checkpoint_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["run_id"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"--resume: {path} is not a run file written by train_imagery") from None


def _remember_run(checkpoint_dir: str | None) -> None:
    """Write the active run's id into the checkpoint folder, so ``--resume`` continues that run."""
    run = mlflow.active_run()
    if checkpoint_dir and run is not None:
        with atomic_write(Path(checkpoint_dir) / RUN_FILE) as fh:
            json.dump({"run_id": run.info.run_id}, fh)


def run_folds(
    cfg: TrainConfig,
    experiment: str,
    *,
    patches: PatchSet | None = None,
    fingerprint: Fingerprint | None = None,
    log_flavour: bool | None = None,
    fold_prefix: str = "",
) -> FoldsResult:
    """Run the experiment of ``cfg`` inside the active (parent) MLflow run; see the module docstring.

    ``patches`` (with its ``fingerprint``) trains on patches already in memory instead of ``cfg.data``;
    ``log_flavour`` (default ``cfg.log_flavour``) False skips the MLflow PyTorch flavour export; the
    nested run of fold ``i`` is named ``<fold_prefix>fold<i>``. With ``cfg.checkpoint_dir`` each run's
    id is kept beside its checkpoint, and ``cfg.resume`` continues those same runs.
    """
    set_run_kind("imagery")
    _remember_run(cfg.checkpoint_dir)
    log_flavour = cfg.log_flavour if log_flavour is None else log_flavour
    with tempfile.TemporaryDirectory() as tmp:
        if patches is None:
            patches, fingerprint = load_training_data(cfg, Path(tmp))
        digest = fingerprint.sha256 if fingerprint is not None else ""
        if fingerprint is not None:
            log_fingerprint(fingerprint)
        mlflow.log_metric("nonfinite_share", patches.nonfinite_share())
        k = cfg.data.folds
        results: list[FoldResult] = []
        if k == 1:
            results.append(train_fold(cfg, patches, None, 0, log_flavour=log_flavour, data_digest=digest))
        else:
            if len(patches) < k:
                raise UserError(f"--folds {k}: only {len(patches)} labelled patches")
            splits = kfold_positions(patches.ids, k, cfg.seed)
            wanted = range(k) if cfg.data.fold is None else [cfg.data.fold]
            for i in wanted:
                tr_pos, te_pos = splits[i]
                fold_cfg = _fold_config(cfg, i)
                resume_id = checkpoint_run_id(fold_cfg.checkpoint_dir) if cfg.resume else None
                with tracked_run(
                    experiment,
                    fold_cfg,
                    run_name=f"{fold_prefix}fold{i}",
                    nested=True,
                    tags={"fold": str(i)},
                    resume_run_id=resume_id,
                ):
                    set_run_kind("imagery")
                    _remember_run(fold_cfg.checkpoint_dir)
                    mlflow.log_params({"fold_index": i, "n_train": len(tr_pos), "n_test": len(te_pos)})
                    fold_set, test_set = patches.subset(tr_pos), patches.subset(te_pos)
                    results.append(
                        train_fold(fold_cfg, fold_set, test_set, i, log_flavour=log_flavour, data_digest=digest)
                    )
    oof = pd.concat([r.oof for r in results], ignore_index=True)[list(OOF_COLUMNS)]
    log_oof(oof)
    run = mlflow.active_run()
    return FoldsResult(run.info.run_id if run else "", [r.model_uri for r in results], summarise(results), oof, results)


def summarise(results: list[FoldResult]) -> dict[str, float]:
    """Mean and std (``<name>_mean``/``<name>_std``) of each fold's test (k-fold) or validation metrics."""
    source = [r.test_metrics or r.val_metrics for r in results]
    prefix = "test" if results and results[0].test_metrics else "val"
    out: dict[str, float] = {}
    for key in sorted(set().union(*source)) if source else []:
        vals = np.array([m[key] for m in source if key in m and _finite(m[key])], dtype=np.float64)
        if len(vals):
            out[f"{prefix}_{key}_mean"] = float(vals.mean())
            out[f"{prefix}_{key}_std"] = float(vals.std(ddof=0))
    return out


def _fold_config(cfg: TrainConfig, fold: int) -> TrainConfig:
    c = copy.deepcopy(cfg)
    if c.checkpoint_dir:
        c.checkpoint_dir = str(Path(c.checkpoint_dir) / f"fold_{fold}")
    return c


def _finite(v: Any) -> bool:
    return isinstance(v, int | float | np.floating | np.integer) and math.isfinite(float(v))


# ------------------------------------------------------------------------------- artifacts
def _log_table(table: Any, name: str) -> None:
    if table is None:
        return
    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        df.to_csv(path, index=False)
        mlflow.log_artifact(str(path))


def _log_plots(cfg: TrainConfig, va: PatchSet, probs: np.ndarray, threshold: float) -> None:
    """Overlay PNGs for up to ``cfg.n_overlays`` validation patches (positives first) and a PR curve."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        labels = va.patch_labels()
        order = np.argsort(-labels, kind="stable")[: cfg.n_overlays]
        for i in order:
            pred = (probs[i] > threshold).astype(np.uint8)
            save_overlay(
                folder / "overlays" / f"overlay_{int(va.ids[i])}.png",
                np.asarray(va.images[i]),
                mask=va.masks[i],
                prob=probs[i],
                pred=pred,
            )
        save_pr_curve(folder / "plots" / "pr_curve.png", probs, va.masks, threshold)
        mlflow.log_artifacts(str(folder))
