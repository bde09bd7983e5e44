"""The fusion jobs behind ``train_fusion`` and ``score_regions``, logged to the active MLflow run.

:func:`train_fuser` reads the ``oof_predictions.csv`` (:mod:`common.oof`) of a tabular run and of an
imagery run, joins them by ``region_id`` and fits :class:`fusion.stacking.StackingFuser`; it logs
``fuser.json`` (recording the tabular feature columns and the imagery channel set of the base runs),
``reliability.png``, ``joined_oof.csv`` and Brier / ROC-AUC metrics.

:func:`score_regions` loads the models (the imagery one only when given, so that scoring without
imagery never imports torch) and scores a region table with :func:`fusion.scoring.score_table`.

Neither changes MLflow's global state: runs and artifacts are read from ``tracking_uri``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from sklearn.metrics import brier_score_loss, roc_auc_score

from common.errors import InputNotFoundError, UserError
from common.fingerprint import fingerprint_dataframe
from common.oof import OOF_ARTIFACT, read_oof
from common.tracking import KIND_TAG, MODEL_DIGEST_TAG, log_fingerprint, resolve_tracking_uri, set_run_kind
from fusion.config import ScoreRegionsConfig, TrainFusionConfig
from fusion.models import Models
from fusion.regions import read_region_table
from fusion.scoring import RegionScorer, model_digest, score_table
from fusion.stacking import FUSER_ARTIFACT, StackingFuser, reliability_plot

TABULAR_META_ARTIFACT = "tabular_model.json"  # written by tabular.serving.log_tabular_model


@dataclass(frozen=True)
class FusionTrainResult:
    """A fitted fuser: its run, URI and metrics (Brier, ROC-AUC of the base models and the stacker)."""

    run_id: str
    fuser_uri: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class ScoreResult:
    """A scoring job: counts of :func:`fusion.scoring.score_table`, its run and seconds."""

    run_id: str
    out: str
    regions: int
    scored: int
    skipped: int
    evidence: dict[str, int]
    seconds: float


# ---------------------------------------------------------------------------------------- training
def _run_artifact(client: Any, run_id: str, path: str, what: str, dst: str) -> Path:
    """Download ``path`` from run ``run_id``; one-line errors for an unknown run or a missing artifact."""
    try:
        client.get_run(run_id)
    except MlflowException:
        raise UserError(f"{what} run {run_id!r} not found in the tracking store {client.tracking_uri}") from None
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=dst, tracking_uri=client.tracking_uri
            )
        )
    except (MlflowException, OSError):
        raise InputNotFoundError(
            f"{what} run {run_id} has no {path} artifact "
            f"(expected one from pipelines.train_{what} with cross-validation)"
        ) from None


def tabular_features_of_run(client: Any, run_id: str, dst: str) -> list[str] | None:
    """The feature columns of a tabular run (``tabular_model.json``), or None when not logged."""
    try:
        meta = json.loads(
            _run_artifact(client, run_id, TABULAR_META_ARTIFACT, "tabular", dst).read_text(encoding="utf-8")
        )
    except UserError:
        return None
    names = meta.get("feature_names")
    return [str(n) for n in names] if names else None


def run_kind(client: Any, run: Any) -> str:
    """Which pipeline made ``run``: its ``landslide.kind`` tag, else what its artifacts and params show."""
    kind = run.data.tags.get(KIND_TAG)
    if kind:
        return str(kind)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    if TABULAR_META_ARTIFACT in names:
        return "tabular"
    if "model.channel_set" in run.data.params or "segmenter" in names:
        return "imagery"
    return "unknown"


def _base_run(client: Any, run_id: str, kind: str, flag: str) -> Any:
    """The run ``run_id``, checked to be a ``kind`` run; one-line errors otherwise."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"{kind} run {run_id!r} not found in the tracking store {client.tracking_uri}") from None
    found = run_kind(client, run)
    if found != kind:
        made_by = run.data.tags.get("entry_point", "?")
        raise UserError(
            f"{flag} {run_id} is {'an' if found[0] in 'aeiou' else 'a'} {found} run (made by {made_by}); "
            f"expected a run of pipelines.train_{kind}"
        )
    return run


def model_digests(client: Any, run: Any) -> list[str]:
    """The ``landslide.model_digest`` tags of ``run`` and its nested runs (a k-fold run's fold models)."""
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    tags = [r.data.tags.get(MODEL_DIGEST_TAG) for r in [run, *children]]
    return sorted({t for t in tags if t})


def imagery_channel_set_of_run(client: Any, run_id: str) -> int | None:
    """The channel set an imagery run trained with (its ``model.channel_set`` param), or None."""
    params = client.get_run(run_id).data.params
    for key in ("model.channel_set", "channel_set"):
        if key in params:
            try:
                return int(params[key])
            except ValueError:
                return None
    return None


def train_fuser(
    cfg: TrainFusionConfig, *, tracking_uri: str | None = None, log: Callable[[str], None] = print
) -> FusionTrainResult:
    """Fit and log the fuser of ``cfg`` inside the active MLflow run (see the module docstring)."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("train_fuser needs an active MLflow run (common.tracking.tracked_run)")
    client = mlflow.MlflowClient(resolve_tracking_uri(tracking_uri))
    set_run_kind("fusion")
    mlflow.set_tags({"tabular_run_id": cfg.tabular_run, "imagery_run_id": cfg.imagery_run})
    if cfg.tabular_run == cfg.imagery_run:
        raise UserError(f"--tabular-run and --imagery-run are the same run {cfg.tabular_run}; expected two runs")
    tab_run = _base_run(client, cfg.tabular_run, "tabular", "--tabular-run")
    img_run = _base_run(client, cfg.imagery_run, "imagery", "--imagery-run")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t_oof = read_oof(
            _run_artifact(client, cfg.tabular_run, OOF_ARTIFACT, "tabular", str(tmp / "t")), "tabular oof_predictions"
        )
        i_oof = read_oof(
            _run_artifact(client, cfg.imagery_run, OOF_ARTIFACT, "imagery", str(tmp / "i")), "imagery oof_predictions"
        )
        fuser = StackingFuser(C=cfg.C, calibration=cfg.calibration, cv=cfg.cv, random_state=cfg.seed)
        fuser.fit_oof(t_oof, i_oof, allow_partial=cfg.allow_partial)
        joined = fuser.joined_oof_
        log_fingerprint(fingerprint_dataframe(joined, source=f"oof:{cfg.tabular_run}+{cfg.imagery_run}"))
        features = tabular_features_of_run(client, cfg.tabular_run, str(tmp / "m"))
        if not features:
            raise UserError(
                f"--tabular-run {cfg.tabular_run} has no {TABULAR_META_ARTIFACT} with feature names; "
                "expected a run of pipelines.train_tabular"
            )
        fuser.meta_ = {
            "tabular_run_id": cfg.tabular_run,
            "imagery_run_id": cfg.imagery_run,
            "tabular_features": features,
            "tabular_model_digest": (model_digests(client, tab_run) or [None])[0],
            "imagery_channel_set": imagery_channel_set_of_run(client, cfg.imagery_run),
            "imagery_model_digests": model_digests(client, img_run),
            "n_regions": int(len(joined)),
        }
        y = joined["y_true"].to_numpy()
        probs = {
            "tabular": joined["p_tabular"].to_numpy(),
            "imagery": joined["p_imagery"].to_numpy(),
            "fused (stacker CV)": fuser.oof_proba_,
        }
        briers = reliability_plot(y, probs, tmp / "reliability.png")
        metrics: dict[str, float] = dict(fuser.metrics_)
        for name, key in (("tabular", "p_tabular"), ("imagery", "p_imagery")):
            p = joined[key].to_numpy()
            ok = ~np.isnan(p)
            if ok.sum() > 1 and len(np.unique(y[ok])) == 2:
                metrics[f"oof_brier_{name}"] = float(brier_score_loss(y[ok], p[ok]))
                metrics[f"oof_roc_auc_{name}"] = float(roc_auc_score(y[ok], p[ok]))
        metrics.update({f"threshold_{k}": v for k, v in fuser.base_thresholds_.items()})
        metrics["threshold_fused"] = fuser.threshold_
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        fuser.save(tmp / FUSER_ARTIFACT)
        joined.to_csv(tmp / "joined_oof.csv", index=False)
        for name in (FUSER_ARTIFACT, "reliability.png", "joined_oof.csv"):
            mlflow.log_artifact(str(tmp / name))
    coefs = fuser.models_["both"].coef
    log(
        f"stacker on {len(joined)} OOF regions: p = sigmoid({coefs[0]:.2f} logit p_tab + {coefs[1]:.2f} logit p_img "
        f"+ {fuser.models_['both'].intercept:.2f}); CV Brier {metrics.get('stacker_cv_brier', float('nan')):.3f} "
        f"(tabular {briers.get('tabular', float('nan')):.3f}, imagery {briers.get('imagery', float('nan')):.3f}); "
        f"threshold {fuser.threshold_:.2f}"
    )
    return FusionTrainResult(run.info.run_id, f"runs:/{run.info.run_id}/{FUSER_ARTIFACT}", metrics)


# ---------------------------------------------------------------------------------------- scoring
def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def score_regions(
    cfg: ScoreRegionsConfig,
    *,
    tracking_uri: str | None = None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = _stderr,
) -> ScoreResult:
    """Score the region table of ``cfg`` into ``cfg.out`` inside the active MLflow run.

    ``warn`` receives warnings (other base models allowed, regions without images); stderr by default.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("score_regions needs an active MLflow run (common.tracking.tracked_run)")
    out = Path(cfg.out)
    if cfg.images is not None and not Path(cfg.images).is_dir():
        raise InputNotFoundError(f"--images folder not found: {cfg.images}")
    table = read_region_table(cfg.regions)
    log_fingerprint(fingerprint_dataframe(table, source=str(cfg.regions)), context="inference")
    tab, seg, fus = Models.load(
        cfg.tabular_model,
        cfg.imagery_model,
        cfg.fusion_model,
        runtime=cfg.runtime,
        device=cfg.device,
        tracking_uri=tracking_uri,
    )
    if fus is not None:
        mlflow.set_tags({f"input_{k}": str(v) for k, v in fus.meta_.items() if k.endswith("run_id")})
    scorer = RegionScorer(tab, seg, fus, cfg.scoring)
    if scorer.warning:
        warn(scorer.warning)
        mlflow.set_tag("landslide.warning", scorer.warning[:5000])
    fingerprint = {
        "tabular_model": model_digest(tab),
        "imagery_model": model_digest(seg),
        "fusion_model": fus.digest() if fus is not None else "",
        "regions": fingerprint_dataframe(table).sha256,
        "images": str(Path(cfg.images).resolve()) if cfg.images else "",
        **cfg.scoring.result_key(),
    }
    t0 = time.perf_counter()
    info = score_table(
        table, scorer, out, cfg.images, cfg.masks_dir, resume=cfg.resume, progress=cfg.progress, fingerprint=fingerprint
    )
    seconds = time.perf_counter() - t0
    if info.missing_images:
        warn(
            f"warning: {info.missing_images} of {info.regions} regions have no usable image (see the note column); "
            "they were scored without imagery"
        )
    mlflow.log_metrics(
        {
            "regions": info.regions,
            "scored": info.scored,
            "skipped": info.skipped,
            "score_seconds": seconds,
            "regions_per_second": info.scored / max(seconds, 1e-9),
            **{f"evidence_{k}": v for k, v in info.evidence.items()},
        }
    )
    log(
        f"scored {info.scored} region(s) ({info.skipped} already done) in {seconds:.1f}s -> {out}; "
        f"evidence: {', '.join(f'{k}={v}' for k, v in info.evidence.items())}"
    )
    return ScoreResult(run.info.run_id, str(out), info.regions, info.scored, info.skipped, info.evidence, seconds)
