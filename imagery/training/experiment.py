"""The train/validate/test protocol behind ``python -m pipelines.train_imagery`` (single run or k-fold).

:func:`run_folds`, per fold: carve a validation split from the training patches
(``imagery.data.splits.holdout_split``), fit the normaliser on the training part, train
(``imagery.training.trainer.Trainer``), tune the threshold on the validation split, log the segmenter
(``imagery.inference.serving.log_segmenter``), overlays and a precision-recall curve, then score the
held-out test fold. Out-of-fold patch probabilities (:mod:`common.oof`) come from the test folds
(k-fold) or from the validation split (single run, fold 0).

``cfg.protocol == "study"`` runs the seed study's protocol instead (``imagery.training.protocol``): the
patches in the natural order of their file names, contiguous folds (fold K 1-based, fold 1 = the last block),
training on the whole training part with the test fold as the selection set, every metric named ``study_*``
and every run tagged ``protocol = "study: selected on the test fold"`` (:func:`train_study_fold`).
``cfg.data.folds_order == "natural"`` gives the honest protocol the same contiguous folds.

Every function here logs into the MLflow run the command opened; none changes MLflow's global state. In a
``torchrun`` job (``imagery.training.distributed``) only rank 0 logs; the other ranks train and return
placeholders (empty URIs, no metrics).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tempfile
from collections.abc import Callable
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
from imagery.data import MODEL_UNITS, PatchSet, load_patches
from imagery.data.bands import is_temporal_band_set
from imagery.data.chips import ChipSpec, is_chip_folder, load_chips
from imagery.data.sen12_temporal import is_sen12_folder, load_sen12_temporal
from imagery.data.synthetic import write_synthetic_l4s
from imagery.device import resolve_device
from imagery.inference.evaluate import evaluate_segmenter, save_pr_curve
from imagery.inference.metrics import segmentation_metrics
from imagery.inference.predict import save_overlay
from imagery.inference.segmenter import Segmenter, SegmenterMeta, band_statistics
from imagery.inference.serving import log_segmenter
from imagery.models import create_model
from imagery.training import distributed as ddp
from imagery.training.config import DataConfig, TrainConfig
from imagery.training.folds import holdout_positions, kfold_positions, natural_fold_positions  # noqa: F401 - re-exported
from imagery.training.losses import build_criterion
from imagery.training.protocol import STUDY_POSTPROCESSING, STUDY_PREFIX, get_protocol
from imagery.training.trainer import Trainer, TrainResult
from imagery.transforms.features import channel_names
from imagery.transforms.preprocess import Preprocessor, fit_normalizer


# ------------------------------------------------------------------------------- data
def chip_spec(d: DataConfig) -> ChipSpec:
    """The :class:`imagery.data.chips.ChipSpec` of ``--image-bands``/``--image-scale``/``--label-map``/``--tile``."""
    bands = tuple(d.image_bands) if d.image_bands else None
    return ChipSpec(image_bands=bands, image_scale=d.image_scale, label_map=d.label_map, tile=d.tile)


def load_labelled(path: str, split: str, layout: str | None, d: DataConfig) -> PatchSet:
    """Labelled patches from an L4S folder/cache, a georeferenced chip folder (``imagery.data.chips``) or a
    Sen12Landslides folder (``*_s2_*.nc``; ``imagery.data.sen12_temporal``, ``--temporal``/``--sensor``)."""
    if layout is None and is_sen12_folder(path):
        if d.image_bands or d.label_map:
            raise UserError(f"{path}: --image-bands/--label-map apply to a chip folder, not to Sen12Landslides patches")
        return load_sen12_temporal(path, d.temporal or "post", d.sensor or "s2", split)
    if d.temporal or d.sensor:
        raise UserError(f"{path}: --temporal/--sensor apply to a Sen12Landslides folder (*_s2_*.nc files)")
    if layout is None and is_chip_folder(path):
        return load_chips(path, chip_spec(d))
    if d.image_bands or d.label_map:
        raise UserError(
            f"{path}: --image-bands/--label-map apply to a chip folder (images/ + labels/ GeoTIFFs), not to L4S data"
        )
    return load_patches(path, split, layout=layout, require_masks=True)


def load_training_data(cfg: TrainConfig, tmp: Path) -> tuple[PatchSet, Fingerprint]:
    """The labelled patches to train on and their fingerprint (synthetic ones without ``--data``), holding the
    model's bands (``--bands``; default: every band of the data)."""
    d = cfg.data
    if d.path is None:
        root = write_synthetic_l4s(tmp / "synthetic", n_patches=d.n_synthetic, seed=cfg.seed, size=d.synthetic_size)
        patches = load_patches(root, "train", layout="plain", require_masks=True)
        source = f"synthetic(n={d.n_synthetic}, size={d.synthetic_size}, seed={cfg.seed})"
    else:
        patches = load_labelled(d.path, d.split, d.layout, d)
        source = str(d.path)
    patches = patches.select_bands(tuple(cfg.model.bands) if cfg.model.bands else patches.bands)
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


def _fit(
    cfg: TrainConfig, fit_set: PatchSet, sel_set: PatchSet, fold: int, data_digest: str
) -> tuple[TrainResult, SegmenterMeta, torch.Tensor, torch.device]:
    """Engineer the channels (the normaliser fitted on ``fit_set``), build the model and the loss, and train on
    ``fit_set`` selecting on ``sel_set`` (the validation split, or the test fold under the study protocol).
    Returns the result, the segmenter's metadata, ``sel_set``'s model inputs and the device."""
    device = resolve_device(cfg.device)
    bands = fit_set.bands
    pre = Preprocessor(cfg.model.channel_set, bands=bands)
    with torch.no_grad():
        tx = pre.transform_all(np.asarray(fit_set.images), device)  # engineered once, normalised in place below
        pre.normalizer = fit_normalizer(cfg.data.normalize, tx, bands)
        tx = pre.normalize(tx)
        sx = pre.transform_all(np.asarray(sel_set.images), device)  # engineered and normalised
    torch.manual_seed(cfg.seed + fold)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.bands = list(bands)
    model = create_model(cfg.model.name, **model_cfg.create_kwargs())
    criterion = build_criterion(cfg.loss.name, cfg.model.head, **cfg.loss.params())

    def log_epoch(metrics: dict[str, float], epoch: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _finite(v)}, step=epoch)

    resume_key = {**cfg.resume_key(), "data": data_digest, "fold": str(fold)}
    trainer = Trainer(
        cfg,
        model,
        criterion,
        tx,
        fit_set.masks,
        sx,
        sel_set.masks,
        device=device,
        log_metrics=log_epoch,
        resume_key=resume_key,
    )
    result = trainer.fit()
    normalizer = pre.normalizer
    meta = SegmenterMeta(
        model_name=cfg.model.name,
        model_kwargs=model_cfg.create_kwargs(),
        channel_set=cfg.model.channel_set,
        threshold=result.threshold,
        normalizer=normalizer.to_dict() if normalizer is not None else None,
        band_order=list(bands),
        units=MODEL_UNITS,
        channels=list(channel_names(cfg.model.channel_set, bands)),
        head=cfg.model.head,
        tta=cfg.tta,
        vote=cfg.vote,
        patch_size=int(fit_set.images.shape[-1]),
        gsd_m=float(fit_set.gsd_m),
        band_stats=band_statistics(np.asarray(fit_set.images), bands),
        training_data=training_data_info(cfg.data, data_digest),
        temporal=(cfg.data.temporal or "post") if is_temporal_band_set(bands) else None,
        sensor=(cfg.data.sensor or "s2") if is_temporal_band_set(bands) else None,
        channel_norm=dict(fit_set.channel_norm),
    )
    return result, meta, sx, device


def training_data_info(d: DataConfig, digest: str) -> dict[str, str]:
    """``{"name", "kind", "fingerprint"}`` of the training data, stored with the model (``SegmenterMeta``)."""
    kind = d.kind or ("synthetic" if d.path is None else "real")
    return {"name": str(d.path or "built-in synthetic patches"), "kind": kind, "fingerprint": digest}


def _log_model_params(meta: SegmenterMeta) -> None:
    mlflow.log_params({"bands": ",".join(meta.band_order), "in_channels": int(meta.model_kwargs["in_channels"])})


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
    tr_pos, va_pos = holdout_positions(
        train_set.ids, cfg.data.val_fraction, cfg.seed + fold, train_set.patch_labels(), train_set.groups
    )
    if len(va_pos) == 0 or len(tr_pos) == 0:
        raise UserError(f"--val-fraction {cfg.data.val_fraction} leaves an empty split of {len(train_set)} patches")
    tr, va = train_set.subset(tr_pos), train_set.subset(va_pos)
    result, meta, vx, device = _fit(cfg, tr, va, fold, data_digest)
    if not ddp.current().is_main:
        return FoldResult(fold, "", result.threshold, {}, {}, oof_frame(va.ids[:0], va.patch_labels()[:0], [], fold))
    uri = log_segmenter(result.model, meta, input_example=vx[:1].detach().cpu().numpy(), log_flavour=log_flavour)
    val_metrics = segmentation_metrics(result.val_probs, va.masks, result.threshold, result.val_patch_probs)
    mlflow.log_metrics({f"val_{k}": v for k, v in val_metrics.items() if _finite(v)})
    mlflow.log_metrics({"threshold": result.threshold, "best_epoch": float(result.best_epoch + 1)})
    _log_table(result.threshold_table, "threshold_sweep.csv")
    _log_plots(cfg, va, result.val_probs, result.threshold)
    _log_model_params(meta)

    test_metrics: dict[str, float] = {}
    if test_set is not None and len(test_set):
        seg = Segmenter(result.model, meta, device)
        test_metrics, pred = evaluate_segmenter(
            seg, np.asarray(test_set.images), test_set.masks, batch_size=cfg.eval_batch_size
        )
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items() if _finite(v)})
        if cfg.postprocessing_rows:
            # the rows that threshold at 0.95 use the validation-tuned threshold (nothing is chosen on the test fold)
            mlflow.log_metrics(_postprocessing_metrics(cfg, seg, test_set, "test_pp_", result.threshold))
        oof = oof_frame(test_set.ids, test_set.patch_labels(), pred["patch_prob"], fold)
    else:
        oof = oof_frame(va.ids, va.patch_labels(), result.val_patch_probs, fold)
    return FoldResult(fold, uri, result.threshold, val_metrics, test_metrics, oof, result.history)


def _postprocessing_metrics(
    cfg: TrainConfig, seg: Segmenter, test_set: PatchSet, prefix: str, tuned: float | None = None
) -> dict[str, float]:
    """The deck's post-processing rows (:data:`STUDY_POSTPROCESSING`) on ``test_set``, ``<prefix><row>_<metric>``;
    ``tuned`` replaces the rows' own threshold where it is not 0.5 (an honest run's validation-tuned threshold).
    The voting row needs the multi-resolution head."""
    images = np.asarray(test_set.images)
    out: dict[str, float] = {}
    for row, (tta, vote, morph, threshold) in STUDY_POSTPROCESSING.items():
        if vote and cfg.model.head != "multires":
            continue
        pp, _ = evaluate_segmenter(
            seg,
            images,
            test_set.masks,
            batch_size=cfg.eval_batch_size,
            tta=tta,
            vote=vote,
            morphology=morph,
            threshold=threshold if tuned is None or threshold == 0.5 else tuned,
        )
        out.update({f"{prefix}{row}_{k}": float(pp[k]) for k in ("f1_2class_mean", "miou_2class", "ls_f1", "ls_iou")})
    return out


def train_study_fold(
    cfg: TrainConfig,
    train_set: PatchSet,
    test_set: PatchSet,
    fold: int,
    *,
    log_flavour: bool = True,
    data_digest: str = "",
) -> FoldResult:
    """The seed study's fold (``fold`` 0-based; the study's fold ``fold + 1``): train on all of ``train_set``,
    select the checkpoint and the threshold on ``test_set`` as the authors did, and log ``study_*`` metrics:

    * ``study_f1_2class_mean``, ``study_miou_2class``, ``study_ls_f1``, ``study_ls_iou``, ... : the selected
      checkpoint at argmax (the deck's raw numbers, e.g. fold 1 0.7242 / 0.6388);
    * ``study_threshold`` and ``study_*_at_threshold``: the best threshold of the test-fold sweep (deck fold 1:
      0.95 -> 0.7463);
    * ``study_pp_<row>_f1_2class_mean`` / ``_miou_2class``: the deck's post-processing rows
      (``imagery.training.protocol.STUDY_POSTPROCESSING``) on the same checkpoint and test fold;
    * ``study_selected_epoch``: epochs trained when the kept checkpoint was scored.
    """
    result, meta, ex, device = _fit(cfg, train_set, test_set, fold, data_digest)
    if not ddp.current().is_main:
        return FoldResult(fold, "", result.threshold, {}, {}, oof_frame(test_set.ids[:0], [], [], fold))
    uri = log_segmenter(result.model, meta, input_example=ex[:1].detach().cpu().numpy(), log_flavour=log_flavour)
    masks = test_set.masks
    metrics = {f"{STUDY_PREFIX}{k}": v for k, v in result.val_metrics.items()}
    at_t = segmentation_metrics(result.val_probs, masks, result.threshold, result.val_patch_probs)
    metrics.update(
        {f"{STUDY_PREFIX}{k}_at_threshold": at_t[k] for k in ("f1_2class_mean", "miou_2class", "ls_f1", "ls_iou")}
    )
    metrics[f"{STUDY_PREFIX}threshold"] = result.threshold
    metrics[f"{STUDY_PREFIX}selected_epoch"] = result.selected_epoch
    seg = Segmenter(result.model, meta, device)
    metrics.update(_postprocessing_metrics(cfg, seg, test_set, f"{STUDY_PREFIX}pp_"))
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _finite(v)})
    _log_table(result.threshold_table, "study_threshold_sweep.csv")
    _log_table(pd.DataFrame(result.evaluations), "study_evaluations.csv")
    _log_model_params(meta)
    oof = oof_frame(test_set.ids, test_set.patch_labels(), result.val_patch_probs, fold)
    return FoldResult(fold, uri, result.threshold, {}, metrics, oof, result.history)


#: The fold runner of each protocol: the honest fold validates on a split of its training part and tests once,
#: the study's selects on its test fold.
FOLD_TRAINERS: dict[str, Callable[..., FoldResult]] = {"honest": train_fold, "study": train_study_fold}


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
    main = ddp.current().is_main
    protocol = get_protocol(cfg.protocol)
    fit = FOLD_TRAINERS[protocol.name]
    if main:
        _tag_protocol(cfg)
        _remember_run(cfg.checkpoint_dir)
    log_flavour = cfg.log_flavour if log_flavour is None else log_flavour
    with tempfile.TemporaryDirectory() as tmp:
        if patches is None:
            patches, fingerprint = load_training_data(cfg, Path(tmp))
        digest = fingerprint.sha256 if fingerprint is not None else ""
        if main:
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
            splits = protocol.fold_splits(patches, cfg)
            wanted = list(range(k)) if cfg.data.fold is None else [protocol.fold_index(cfg.data.fold)]
            for i in wanted:
                tr_pos, te_pos = splits[i]
                label = protocol.fold_label(i)
                fold_cfg = _fold_config(cfg, label)
                resume_id = checkpoint_run_id(fold_cfg.checkpoint_dir) if cfg.resume and main else None
                tags = {"fold": str(label), **protocol.name_tag()}
                run_ctx: Any = (
                    tracked_run(
                        experiment,
                        fold_cfg,
                        run_name=f"{fold_prefix}fold{label}",
                        nested=True,
                        tags=tags,
                        resume_run_id=resume_id,
                    )
                    if main
                    else contextlib.nullcontext()
                )
                with run_ctx:
                    if main:
                        _tag_protocol(fold_cfg)
                        _remember_run(fold_cfg.checkpoint_dir)
                        mlflow.log_params({"fold_index": label, "n_train": len(tr_pos), "n_test": len(te_pos)})
                    fold_set, test_set = patches.subset(tr_pos), patches.subset(te_pos)
                    results.append(fit(fold_cfg, fold_set, test_set, i, log_flavour=log_flavour, data_digest=digest))
    oof = pd.concat([r.oof for r in results], ignore_index=True)[list(OOF_COLUMNS)]
    if not main:
        return FoldsResult("", [], {}, oof, results)
    log_oof(oof)
    run = mlflow.active_run()
    return FoldsResult(run.info.run_id if run else "", [r.model_uri for r in results], summarise(results), oof, results)


def _tag_protocol(cfg: TrainConfig) -> None:
    """Run kind and protocol tags of the active run; a study run also lists how it departs from the study's recipe."""
    protocol = get_protocol(cfg.protocol)
    set_run_kind(protocol.run_kind)
    tags = protocol.tags(cfg)
    if cfg.study_row:
        tags["study_row"] = cfg.study_row
    mlflow.set_tags(tags)


def summarise(results: list[FoldResult]) -> dict[str, float]:
    """Mean and std (``<name>_mean``/``<name>_std``) of each fold's test (k-fold) or validation metrics; a study
    fold's metrics keep their ``study_`` names (``study_f1_2class_mean_mean``)."""
    source = [r.test_metrics or r.val_metrics for r in results]
    prefix = "test_" if results and results[0].test_metrics else "val_"
    out: dict[str, float] = {}
    for key in sorted(set().union(*source)) if source else []:
        vals = np.array([m[key] for m in source if key in m and _finite(m[key])], dtype=np.float64)
        name = key if key.startswith(STUDY_PREFIX) else f"{prefix}{key}"
        if len(vals):
            out[f"{name}_mean"] = float(vals.mean())
            out[f"{name}_std"] = float(vals.std(ddof=0))
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
                bands=va.bands,
            )
        save_pr_curve(folder / "plots" / "pr_curve.png", probs, va.masks, threshold)
        mlflow.log_artifacts(str(folder))
