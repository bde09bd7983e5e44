"""``python -m pipelines.train_fusion``: fit the stacking fuser on two runs' out-of-fold predictions.

Reads ``oof_predictions.csv`` (``region_id, y_true, p_oof, fold``) of a tabular run
(``pipelines.train_tabular``) and of an imagery run (``pipelines.train_imagery --folds k``), joins them
by ``region_id`` (every id must be in both unless ``--allow-partial``) and fits
:class:`fusion.stacking.StackingFuser` on them; in-sample predictions are never used.

Logged: the config, a fingerprint of the joined table, tags ``tabular_run_id``/``imagery_run_id``,
``fuser.json`` (the model; it records the tabular feature columns and the imagery channel set so
that scoring refuses models from other runs), ``reliability.png`` and Brier / ROC-AUC metrics of
each base model and of the fuser's own cross-validated predictions.

Example::

    python -m pipelines.train_fusion --tabular-run 3f2a... --imagery-run 9b1c...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import add_common_args, positive_int, run_main
from common.fingerprint import fingerprint_dataframe
from common.tracking import log_fingerprint, setup_tracking, tracked_run

EXPERIMENT = "train_fusion"
OOF_ARTIFACT = "oof_predictions.csv"


@dataclass
class TrainFusionConfig:
    """What to fit: the two input runs, the meta-model's ``C`` (inverse L2), ``calibration``
    (none | sigmoid | isotonic), the fuser's own CV folds ``cv`` and ``allow_partial`` joins."""

    tabular_run: str
    imagery_run: str
    C: float = 1.0
    calibration: str = "none"
    cv: int = 5
    allow_partial: bool = False
    seed: int = 42
    experiment: str = EXPERIMENT
    run_name: str | None = None
    tracking_uri: str | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.train_fusion", description=__doc__.split("\n\n")[0])
    p.add_argument("--tabular-run", required=True, help="MLflow run id of a pipelines.train_tabular run")
    p.add_argument("--imagery-run", required=True, help="MLflow run id of a pipelines.train_imagery run (with OOF predictions)")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic meta-model")
    p.add_argument("--calibration", default="none", choices=("none", "sigmoid", "isotonic"),
                   help="extra calibration on top of the logistic meta-model (default none: the LR is itself calibrated)")
    p.add_argument("--cv", type=positive_int, default=5, help="folds of the fuser's own CV (threshold and reported metrics)")
    p.add_argument("--allow-partial", action="store_true", help="keep regions present in only one OOF table (fit fallbacks only)")
    add_common_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainFusionConfig:
    if not args.C > 0:
        raise ValueError(f"--C must be > 0, got {args.C}")
    return TrainFusionConfig(
        tabular_run=args.tabular_run, imagery_run=args.imagery_run, C=args.C, calibration=args.calibration,
        cv=args.cv, allow_partial=args.allow_partial, seed=args.seed,
        experiment=args.experiment or EXPERIMENT, run_name=args.run_name, tracking_uri=args.tracking_uri,
    )


def _run_artifact(run_id: str, path: str, what: str, dst: str) -> Path:
    """Download ``path`` from run ``run_id``; one-line errors for an unknown run or a missing artifact."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.tracking.MlflowClient()
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"{what} run {run_id!r} not found in the tracking store {mlflow.get_tracking_uri()}") from None
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst))
    except (MlflowException, OSError):
        raise FileNotFoundError(
            f"{what} run {run_id} has no {path} artifact (expected one from pipelines.train_{what} with cross-validation)"
        ) from None


def tabular_features_of_run(run_id: str, dst: str) -> list[str] | None:
    """The feature columns of a tabular run (``tabular_model.json``), or None when not logged."""
    try:
        from tabular.serving import METADATA_FILE
    except ImportError:  # pragma: no cover - tabular package always present in this project
        return None
    try:
        meta = json.loads(_run_artifact(run_id, METADATA_FILE, "tabular", dst).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    names = meta.get("feature_names")
    return [str(n) for n in names] if names else None


def imagery_channel_set_of_run(run_id: str) -> int | None:
    """The channel set an imagery run trained with (its ``model.channel_set`` param), or None."""
    import mlflow

    params = mlflow.tracking.MlflowClient().get_run(run_id).data.params
    for key in ("model.channel_set", "channel_set"):
        if key in params:
            try:
                return int(params[key])
            except ValueError:
                return None
    return None


def train(cfg: TrainFusionConfig, log: Any = print) -> dict[str, Any]:
    """Fit and log the fuser; returns ``run_id``, ``fuser_uri`` (``runs:/<id>/fuser.json``) and metrics."""
    import mlflow
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from fusion.stacking import FUSER_ARTIFACT, StackingFuser, read_oof, reliability_plot

    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = setup_tracking(cfg.tracking_uri)
    tags = {"tabular_run_id": cfg.tabular_run, "imagery_run_id": cfg.imagery_run}
    with tracked_run(cfg.experiment, cfg, run_name=cfg.run_name, tracking_uri=uri, tags=tags) as run, \
            tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t_oof = read_oof(_run_artifact(cfg.tabular_run, OOF_ARTIFACT, "tabular", str(tmp / "t")), "tabular oof_predictions")
        i_oof = read_oof(_run_artifact(cfg.imagery_run, OOF_ARTIFACT, "imagery", str(tmp / "i")), "imagery oof_predictions")
        fuser = StackingFuser(C=cfg.C, calibration=cfg.calibration, cv=cfg.cv, random_state=cfg.seed)
        fuser.fit_oof(t_oof, i_oof, allow_partial=cfg.allow_partial)
        joined = fuser.joined_oof_
        log_fingerprint(fingerprint_dataframe(joined, source=f"oof:{cfg.tabular_run}+{cfg.imagery_run}"))
        fuser.meta_ = {
            "tabular_run_id": cfg.tabular_run,
            "imagery_run_id": cfg.imagery_run,
            "tabular_features": tabular_features_of_run(cfg.tabular_run, str(tmp / "m")),
            "imagery_channel_set": imagery_channel_set_of_run(cfg.imagery_run),
            "n_regions": int(len(joined)),
        }
        y = joined["y_true"].to_numpy()
        probs = {"tabular": joined["p_tabular"].to_numpy(), "imagery": joined["p_imagery"].to_numpy(),
                 "fused (stacker CV)": fuser.oof_proba_}
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
        mlflow.log_artifact(str(tmp / FUSER_ARTIFACT))
        mlflow.log_artifact(str(tmp / "reliability.png"))
        joined.to_csv(tmp / "joined_oof.csv", index=False)
        mlflow.log_artifact(str(tmp / "joined_oof.csv"))
        coefs = fuser.models_["both"].coef
        log(
            f"stacker on {len(joined)} OOF regions: p = sigmoid({coefs[0]:.2f} logit p_tab + {coefs[1]:.2f} logit p_img "
            f"+ {fuser.models_['both'].intercept:.2f}); CV Brier {metrics.get('stacker_cv_brier', float('nan')):.3f} "
            f"(tabular {briers.get('tabular', float('nan')):.3f}, imagery {briers.get('imagery', float('nan')):.3f}); "
            f"threshold {fuser.threshold_:.2f}"
        )
        return {
            "run_id": run.info.run_id,
            "fuser_uri": f"runs:/{run.info.run_id}/{FUSER_ARTIFACT}",
            "metrics": metrics,
            "tracking_uri": uri,
        }


def main(argv: Sequence[str] | None = None) -> int:
    cfg = config_from_args(build_parser().parse_args(argv))
    result = train(cfg, log=lambda line: print(line, flush=True))
    print(f"fusion model: {result['fuser_uri']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
