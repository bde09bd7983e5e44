"""Evaluation of segmenters on labelled patches.

* :func:`evaluate_segmenter`: landslide-class precision/recall/F1/IoU accumulated over all pixels of
  a labelled set (``ls_*``), the seed's 2-class means (``*_2class``) and patch-level detection
  AUC/F1 (``patch_*``) for a :class:`imagery.inference.serving.Segmenter`.
* :func:`save_pr_curve`: the pixel-level precision-recall curve as a PNG.

The train/validate/test protocol (single run or k-fold) is in :mod:`imagery.training.experiment`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve

from common.atomic import atomic_path
from common.cli import UserError
from common.fingerprint import fingerprint_array
from common.tracking import log_fingerprint
from imagery.data import load_patches
from imagery.data.chips import ChipSpec, is_chip_folder, load_chips
from imagery.data.patches import IGNORE
from imagery.data.sen12_temporal import is_sen12_folder, load_sen12_temporal
from imagery.inference.config import DEFAULT_BATCH, EvalConfig
from imagery.inference.engine import log_engine_summary
from imagery.inference.metrics import segmentation_metrics
from imagery.inference.serving import load_segmenter


def evaluate_segmenter(
    segmenter: Any,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    batch_size: int = DEFAULT_BATCH,
    tta: str | None = None,
    vote: bool | None = None,
    morphology: str | None = None,
    threshold: float | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of ``segmenter`` on raw patches ``(N, 14, H, W)`` with masks ``(N, H, W)``, and its predictions."""
    if masks is None:
        raise UserError(
            "evaluation needs masks, but the split has none (use pipelines.predict_imagery for unlabelled data)"
        )
    pred = segmenter.predict(
        images, batch_size=batch_size, tta=tta, vote=vote, morphology=morphology, threshold=threshold
    )
    t = segmenter.threshold if threshold is None else float(threshold)
    metrics = segmentation_metrics(pred["prob"], masks, t, pred["patch_prob"], pred=pred["mask"])
    metrics["threshold"] = t
    return metrics, pred


@dataclass(frozen=True)
class EvalResult:
    """What ``pipelines.evaluate_imagery`` reports: the patch count and every metric (``ls_*`` first)."""

    n_patches: int
    metrics: dict[str, float]
    #: the inference path that ran and its throughput (:func:`imagery.inference.engine.engine_summary`)
    engine: dict[str, Any] = field(default_factory=dict)


def evaluate_split(cfg: EvalConfig, *, tracking_uri: str | None = None) -> EvalResult:
    """Evaluate the segmenter ``cfg.model_uri`` on the labelled split ``cfg.split`` of ``cfg.data``.

    A model trained on a Sen12Landslides temporal set (``SegmenterMeta.temporal``) is evaluated on a folder of
    Sen12Landslides patches (``<region>_s2_<id>.nc``, ``imagery.data.sen12_temporal``): each patch's pre/post-event
    composites built from its time series as for training (the split file and norm statistics when present); it
    refuses single-date data in one line, and a single-date model refuses a Sen12Landslides folder.

    Logs the data fingerprint and the metrics to the active MLflow run.
    """
    segmenter = None
    if cfg.layout is None and is_sen12_folder(cfg.data):
        segmenter = load_segmenter(cfg.model_uri, device=cfg.device, tracking_uri=tracking_uri, runtime=cfg.runtime)
        temporal = segmenter.meta.temporal
        if not temporal:
            raise UserError(
                f"--data {cfg.data} holds Sen12Landslides time series; the model {cfg.model_uri} is single-date "
                "(no temporal set): evaluate it on L4S patches or chips, or train one with --temporal"
            )
        # the pre/post composites of each patch's time series, as train_imagery built them for this model
        patches = load_sen12_temporal(cfg.data, temporal, segmenter.meta.sensor or "s2", split=cfg.split)
        if not _same_norm(patches.channel_norm, segmenter.meta.channel_norm or {}):
            raise UserError(
                f"--data {cfg.data}: its norm statistics ({_norm_text(patches.channel_norm)}) differ from those the "
                f"model {cfg.model_uri} was trained with ({_norm_text(segmenter.meta.channel_norm or {})}); evaluate "
                "it on data normalised as for training (the same task folder's norm_data.json, or none)"
            )
    elif cfg.layout is None and is_chip_folder(cfg.data):
        spec = ChipSpec(
            image_bands=tuple(cfg.image_bands) if cfg.image_bands else None,
            image_scale=cfg.image_scale,
            label_map=cfg.label_map,
            tile=cfg.tile,
        )
        patches = load_chips(cfg.data, spec)
    else:
        patches = load_patches(cfg.data, cfg.split, layout=cfg.layout, require_masks=True)
    if len(patches) == 0:
        raise UserError(f"{cfg.data}: split {cfg.split!r} has no patches")
    if segmenter is None:  # workload: the patches (times the TTA views, not known yet): a long run may compile
        segmenter = load_segmenter(
            cfg.model_uri, device=cfg.device, tracking_uri=tracking_uri, runtime=cfg.runtime, workload=len(patches)
        )
        segmenter.meta.require_single_date(f"--data {cfg.data}")  # a temporal model needs Sen12Landslides patches
    missing = [b for b in segmenter.bands if b not in patches.bands]
    if missing:
        raise UserError(
            f"--model {cfg.model_uri}: the model needs bands {', '.join(segmenter.bands)}; {cfg.data} lacks "
            f"{', '.join(missing)} (it has {', '.join(patches.bands)})"
        )
    patches = patches.select_bands(segmenter.bands)
    log_fingerprint(
        fingerprint_array(np.asarray(patches.images), source=f"{cfg.data}:{cfg.split}"), context="evaluation"
    )
    metrics, _ = evaluate_segmenter(  # ignored (unlabelled) chip pixels count in no metric
        segmenter,
        np.asarray(patches.images),
        patches.masks,
        batch_size=cfg.batch_size,
        tta=cfg.tta,
        vote=cfg.vote,
        morphology=cfg.morphology,
        threshold=cfg.threshold,
    )
    metrics["labelled_pixels"] = float(np.count_nonzero(np.asarray(patches.masks) != IGNORE))
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
    return EvalResult(len(patches), metrics, log_engine_summary(segmenter))


def save_pr_curve(
    path: Path, probs: np.ndarray, masks: np.ndarray, threshold: float, max_pixels: int = 2_000_000
) -> Path:
    """Pixel-level precision-recall curve of the landslide class (PNG, atomic), marking ``threshold``."""
    m = np.asarray(masks).reshape(-1)
    valid = m != IGNORE
    y = (m[valid] == 1).astype(np.int64)
    p = np.asarray(probs).reshape(-1)[valid].astype(np.float64)
    if y.size > max_pixels:
        sel = np.random.default_rng(0).choice(y.size, max_pixels, replace=False)
        y, p = y[sel], p[sel]
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    if y.any():
        prec, rec, thr = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=f"AP {average_precision_score(y, p):.3f}")
        j = int(np.searchsorted(thr, threshold)) if len(thr) else 0
        j = min(j, len(thr) - 1) if len(thr) else 0
        if len(thr):
            ax.scatter([rec[j]], [prec[j]], color="red", zorder=3, label=f"t = {threshold:.2f}")
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "no landslide pixels", ha="center")
    ax.set_xlabel("recall (landslide pixels)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return Path(path)


__all__ = ["EvalResult", "evaluate_segmenter", "evaluate_split", "save_pr_curve"]


def _same_norm(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> bool:
    """Whether two ``{band: {"mean", "std"}}`` tables agree (to float precision; the same bands)."""
    if set(a) != set(b):
        return False
    return all(
        np.isclose(float(a[k]["mean"]), float(b[k]["mean"])) and np.isclose(float(a[k]["std"]), float(b[k]["std"]))
        for k in a
    )


def _norm_text(norm: dict[str, dict[str, float]]) -> str:
    return f"{len(norm)} bands" if norm else "none"
