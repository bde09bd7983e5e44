"""The main job of ``python -m pipelines.quickstart`` (its steps: that module's docstring), kept apart from the
command so that ``--help`` loads no torch, LightGBM or MLflow."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from common.atomic import atomic_write
from common.fingerprint import fingerprint_array, fingerprint_dataframe
from common.registry import DEFAULT_NAMES
from common.tracking import log_fingerprint, runs_table_url, tracked_run
from fusion.config import ScoreRegionsConfig, TrainFusionConfig
from fusion.demo.paired import PairedConfig, PairedRegions, make_paired_regions
from fusion.demo.world import write_world
from fusion.evaluation import evaluate_held_out, fused_roc_auc
from fusion.experiment import score_regions, train_fuser
from fusion.models import Models
from fusion.scoring import ScoringConfig
from fusion.stacking import load_fuser
from imagery.data import PatchSet, write_image
from imagery.training import DataConfig, FoldsResult, ModelConfig, OptimConfig, TrainConfig, run_folds
from pipelines._quickstart_config import QuickstartConfig
from pipelines._register import imagery_extra, register_trained
from service.assess import AssessConfig, AssessResult, assess
from tabular.config import CVConfig, TrainTabularConfig
from tabular.experiment import train_tabular_model

#: The date the synthetic world's scene is dated (and assessed at).
WORLD_DATE = "2024-06-01"
MODALITIES: tuple[str, ...] = ("tabular", "imagery", "fused")
#: The quick start trains new models every run, so an automatic engine choice would be measured (ONNX export
#: and int8 calibration included) every run for a few hundred 32 px patches: it scores on torch eager fp32.
QUICKSTART_RUNTIME = "torch"


# ------------------------------------------------------------------------------ the job
def _write_l4s(folder: Path, ids: np.ndarray, images: np.ndarray) -> Path:
    """The test patches as an L4S folder (``img/image_<region_id>.h5``), as an analyst would hand them over."""
    for j, rid in enumerate(ids):
        write_image(folder / "img" / f"image_{int(rid)}.h5", images[j])
    return folder


def imagery_config(cfg: QuickstartConfig) -> TrainConfig:
    """The imagery model's training configuration (2-fold cross-fitting, see the module docstring)."""
    return TrainConfig(
        model=ModelConfig(cfg.imagery_model, cfg.imagery_channels, cfg.imagery_head, None, None, cfg.imagery_width),
        optim=OptimConfig(lr=cfg.imagery_lr, schedule="constant"),
        data=DataConfig(path="paired-synthetic", folds=2, kind="synthetic"),
        epochs=cfg.imagery_epochs,
        batch_size=cfg.imagery_batch_size,
        seed=cfg.seed,
        device="cpu",
        precision=cfg.imagery_precision,
        n_overlays=0,
        progress=cfg.progress,
    ).validate()


def train_imagery_crossfit(cfg: QuickstartConfig, patches: PatchSet) -> FoldsResult:
    """2-fold cross-fitted imagery training on the training regions, as ``train_imagery --folds 2``.

    :func:`imagery.training.run_folds` on the patches in memory, without the PyTorch flavour export
    (``log_flavour=False``, the slowest step on a CPU); each fold still logs ``segmenter/`` (state
    dict + JSON metadata), which ``load_segmenter`` reads. The parent run logs ``oof_predictions.csv``.
    """
    tcfg = imagery_config(cfg)
    fp = fingerprint_array(np.asarray(patches.images), source=f"{len(patches)} training patches, seed {cfg.seed}")
    with tracked_run(cfg.experiment, tcfg, run_name="imagery"):
        return run_folds(
            tcfg, cfg.experiment, patches=patches, fingerprint=fp, log_flavour=False, fold_prefix="imagery-"
        )


@dataclass(frozen=True)
class QuickstartResult:
    """The main job's outcome: the held-out table, timings (seconds), the scores file and every run id."""

    table: pd.DataFrame
    timings: dict[str, float]
    scores: str
    tabular_run_id: str
    imagery_run_id: str
    fusion_run_id: str
    score_run_id: str
    evaluation_run_id: str
    tracking_uri: str
    registered: dict[str, str] = field(default_factory=dict)
    #: the usable segmenter (``runs:/<fold-0 run>/segmenter``); ``imagery_run_id`` is the cross-fitting parent
    #: run that holds the out-of-fold predictions ``train_fusion --imagery-run`` reads, but no model
    imagery_model: str = ""


def register_quickstart_models(
    cfg: QuickstartConfig, tab: Any, img: FoldsResult, fus: Any, log: Callable[[str], None] = print
) -> dict[str, str]:
    """Register the three models under the default names, carded and tagged as trained on synthetic data."""
    data = f"built-in paired synthetic regions (n={cfg.n_regions}, seed {cfg.seed})"
    note = ["made by pipelines.quickstart: a demonstration on synthetic data"]
    common = {"data_name": data, "data_kind": "synthetic", "notes": note, "log": log}
    return {
        "tabular": register_trained(
            "tabular",
            tab.logged_model_uri or tab.model_uri,
            name=DEFAULT_NAMES["tabular"],
            card_run_id=tab.run_id,
            metrics=tab.summary,
            threshold=tab.threshold,
            protocol=f"{cfg.tabular_folds}-fold cross-validation, out-of-fold scores",
            **common,
        ),
        "imagery": register_trained(
            "imagery",
            img.model_uris[0],
            name=DEFAULT_NAMES["imagery"],
            card_run_id=img.model_uris[0][len("runs:/") :].split("/", 1)[0],
            metrics=img.metrics,
            protocol="2-fold cross-fitting (fold 1's model registered)",
            extra=imagery_extra(img.model_uris[0]),
            **common,
        ),
        "fusion": register_trained(
            "fusion",
            f"runs:/{fus.run_id}",
            name=DEFAULT_NAMES["fusion"],
            card_run_id=fus.run_id,
            metrics=fus.metrics,
            protocol="cross-validated stacker on out-of-fold base predictions",
            **common,
        ),
    }


def _features(table: pd.DataFrame) -> list[str]:
    """The tabular model's features in the paired table (what ``train_tabular`` kept)."""
    return [c for c in table.columns if c not in ("region_id", "landslide", "lon", "lat")]


def assess_world(
    cfg: QuickstartConfig,
    test: PairedRegions,
    tabular_model: str,
    imagery_model: str,
    fusion_model: str,
    log: Callable[[str], None],
) -> tuple[AssessResult, float]:
    """Step 6: the held-out regions as a georeferenced world (:mod:`fusion.demo.world`), assessed from their
    polygons with ``pipelines.assess``; returns the result and its fused ROC-AUC against the truth."""
    out_dir = Path(cfg.out_dir)
    features = _features(test.table)
    world = write_world(test.table, test.images, test.masks, out_dir / "world", features=features, date=WORLD_DATE)
    acfg = AssessConfig(
        date=WORLD_DATE,
        regions=str(world.regions),
        scene=str(world.scene),
        dem=str(world.dem),
        factors=[f"{name}={path}" for name, path in world.factors.items()],
        tabular_model=tabular_model,
        imagery_model=imagery_model,
        fusion_model=fusion_model,
        out=str(out_dir / "assess"),
        runtime=QUICKSTART_RUNTIME,
        progress=cfg.progress,
        seed=cfg.seed,
    )
    with tracked_run(cfg.experiment, acfg, run_name="assess"):
        res = assess(acfg, log=log)
    return res, fused_roc_auc(test.table, res.regions)


def run(cfg: QuickstartConfig, log: Callable[[str], None] = print) -> QuickstartResult:
    """Run the whole job in the store the command set up; returns run ids, the metrics table and timings."""
    uri = mlflow.get_tracking_uri()
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    quiet = (lambda _line: None) if not cfg.progress else log

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        pairs = make_paired_regions(PairedConfig(n_regions=cfg.n_regions, seed=cfg.seed, size=cfg.patch_size))
        pos = np.arange(cfg.n_regions)
        tr_pos, te_pos = train_test_split(
            pos, test_size=cfg.test_fraction, stratify=pairs.labels, random_state=cfg.seed
        )
        train, test = pairs.subset(np.sort(tr_pos)), pairs.subset(np.sort(te_pos))
        train_csv, test_csv = tmp / "train_regions.csv", tmp / "test_regions.csv"
        train.table.to_csv(train_csv, index=False)
        test.table.to_csv(test_csv, index=False)
        test_dir = _write_l4s(tmp / "l4s_test", test.region_ids, test.images)
        timings["generate_s"] = time.perf_counter() - t0
        clouded = float((pairs.latent["cloud_fraction"] > 0).mean())
        log(
            f"[1/6] {cfg.n_regions} paired regions ({pairs.labels.mean():.0%} landslide, {clouded:.0%} clouded), "
            f"{len(train.labels)} train / {len(test.labels)} test, {cfg.patch_size}px patches "
            f"({timings['generate_s']:.0f}s)"
        )

        t0 = time.perf_counter()
        tab_cfg = TrainTabularConfig(
            data=str(train_csv),
            id_column="region_id",
            drop=["lon", "lat"],
            seed=cfg.seed,
            experiment=cfg.experiment,
            run_name="tabular",
            cv=CVConfig(n_folds=cfg.tabular_folds),
        )
        with tracked_run(cfg.experiment, tab_cfg, run_name="tabular"):
            tab = train_tabular_model(tab_cfg, log=quiet)
        timings["tabular_s"] = time.perf_counter() - t0
        log(
            f"[2/6] tabular model: OOF ROC-AUC {tab.summary.get('roc_auc_mean', float('nan')):.3f} "
            f"(run {tab.run_id}, {timings['tabular_s']:.0f}s)"
        )

        t0 = time.perf_counter()
        img = train_imagery_crossfit(cfg, PatchSet(train.images, train.masks, train.region_ids))
        timings["imagery_s"] = time.perf_counter() - t0
        img_auc = (
            roc_auc_score(img.oof["y_true"], img.oof["p_oof"]) if img.oof["y_true"].nunique() == 2 else float("nan")
        )
        log(
            f"[3/6] imagery model ({cfg.imagery_model}, width {cfg.imagery_width}, {cfg.imagery_epochs} epochs, 2-fold "
            f"cross-fitting): OOF ROC-AUC {img_auc:.3f} (run {img.run_id}, {timings['imagery_s']:.0f}s)"
        )

        t0 = time.perf_counter()
        fus_cfg = TrainFusionConfig(
            tabular_run=tab.run_id, imagery_run=img.run_id, seed=cfg.seed, experiment=cfg.experiment, run_name="fusion"
        )
        with tracked_run(cfg.experiment, fus_cfg, run_name="fusion"):
            fus = train_fuser(fus_cfg, tracking_uri=uri, log=quiet)
        timings["fusion_s"] = time.perf_counter() - t0
        log(
            f"[4/6] stacker on OOF predictions: CV ROC-AUC {fus.metrics.get('stacker_cv_roc_auc', float('nan')):.3f}, "
            f"Brier {fus.metrics.get('stacker_cv_brier', float('nan')):.3f} "
            f"(run {fus.run_id}, {timings['fusion_s']:.0f}s)"
        )

        registered = (
            register_quickstart_models(cfg, tab, img, fus, quiet) if cfg.register else {"imagery": img.model_uris[0]}
        )

        t0 = time.perf_counter()
        scores_csv = out_dir / "scores.csv"
        sc_cfg = ScoreRegionsConfig(
            regions=str(test_csv),
            out=str(scores_csv),
            images=str(test_dir),
            tabular_model=tab.model_uri,
            imagery_model=img.model_uris[0],
            fusion_model=fus.fuser_uri,
            masks_dir=str(out_dir / "masks"),
            scoring=ScoringConfig(),
            runtime=QUICKSTART_RUNTIME,
            progress=cfg.progress,
            seed=cfg.seed,
            experiment=cfg.experiment,
            run_name="score",
        )
        with tracked_run(cfg.experiment, sc_cfg, run_name="score"):
            sc = score_regions(sc_cfg, tracking_uri=uri, log=quiet)
        timings["score_s"] = time.perf_counter() - t0

    thresholds = Models(fuser=load_fuser(fus.fuser_uri, tracking_uri=uri)).thresholds()
    held_out = evaluate_held_out(test.table, pd.read_csv(scores_csv), thresholds, cfg.n_bootstrap, cfg.seed)
    table = held_out.table
    log(
        f"[5/6] scored {sc.scored} held-out regions ({timings['score_s']:.0f}s); "
        f"models agree on {held_out.agreement:.0%}\n"
    )
    log(held_out.format())

    t0 = time.perf_counter()
    world_res, world_auc = assess_world(cfg, test, tab.model_uri, img.model_uris[0], fus.fuser_uri, quiet)
    timings["assess_s"] = time.perf_counter() - t0
    log(
        f"\n[6/6] assessed the {len(test.labels)} held-out regions from their polygons on a georeferenced world "
        f"(scene, DEM, {len(_features(test.table))} factor rasters): "
        f"fused ROC-AUC {world_auc:.3f} ({timings['assess_s']:.0f}s)"
    )
    log(f"      report: {world_res.out / 'report.html'} (open it in a browser; it works offline)")
    world = Path(cfg.out_dir) / "world"
    serve_cmd = (
        f"python -m pipelines.serve --tracking-uri {uri} --tabular-model {tab.model_uri} "
        f"--imagery-model {img.model_uris[0]} --fusion-model {fus.fuser_uri} --scenes-root {world} "
        f"--dem {world / 'dem.tif'} --factors {world / 'factors'}/*.tif"
    )
    timings["total_s"] = time.perf_counter() - t_all

    with tracked_run(
        cfg.experiment,
        cfg,
        run_name="evaluation",
        tags={
            "tabular_run_id": tab.run_id,
            "imagery_run_id": img.run_id,
            "fusion_run_id": fus.run_id,
            "score_run_id": sc.run_id,
        },
    ) as run:
        log_fingerprint(
            fingerprint_dataframe(pairs.table, source=f"paired(n={cfg.n_regions},seed={cfg.seed})"),
            context="evaluation",
        )
        metrics = held_out.metrics()
        metrics.update(timings)
        metrics["test_assess_fused_roc_auc"] = world_auc
        mlflow.log_metrics(metrics)
        with atomic_write(out_dir / "metrics.csv") as fh:
            table.to_csv(fh, index=False)
        mlflow.log_artifact(str(out_dir / "metrics.csv"))
        mlflow.log_artifact(str(scores_csv))
        eval_run = run.info.run_id
    log(f"\ntotal {timings['total_s']:.0f}s; scores: {scores_csv}")
    log(f"compare the runs: mlflow ui --backend-store-uri {uri}")
    log(f"  then open its runs table: {runs_table_url(cfg.experiment, uri)}")
    log(f"serve the same models (map page at http://127.0.0.1:8000/): {serve_cmd}")
    return QuickstartResult(
        table,
        timings,
        str(scores_csv),
        tab.run_id,
        img.run_id,
        fus.run_id,
        sc.run_id,
        eval_run,
        uri,
        registered,
        img.model_uris[0],
    )


def run_id_of(uri: str) -> str:
    """The run id of a ``runs:/<run_id>/...`` URI."""
    return uri.removeprefix("runs:/").split("/", 1)[0]
