"""``python -m pipelines.score_regions``: fused landslide scores for a table of regions.

Per region: ``p_tabular``, ``p_imagery``, ``p_fused``, ``decision`` (``--policy``), ``agree``,
``evidence`` (both / tabular_only / imagery_only), ``reason``, the tabular model's top SHAP features,
the path of the written mask PNG, a ``note`` when a modality is missing, and the imagery region
features (``img_*``). Regions are scored in batches with a progress bar; rows are appended to
``<out>.partial`` and renamed onto ``--out`` at the end, so ``--out`` is never half-written and
``--resume`` continues an interrupted run.

Documented fallbacks (marked in the output, not errors): a region whose image is missing or
unreadable is scored by the tabular model alone (``--strict-images`` makes it an error).
Errors (one line, exit 2, run marked FAILED): missing/empty/duplicate-id region table, a column the
tabular model needs, a missing model, or models from incompatible runs.

Example::

    python -m pipelines.score_regions --regions regions.csv --images l4s/ \\
        --tabular-model runs:/<tab>/model --imagery-model runs:/<img>/segmenter \\
        --fusion-model runs:/<fus>/fuser.json --out scores.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.cli import add_common_args, positive_int, run_main, unit_float
from common.fingerprint import fingerprint_dataframe
from common.tracking import log_fingerprint, setup_tracking, tracked_run
from fusion.crosscheck import POLICIES
from fusion.scoring import ScoringConfig

EXPERIMENT = "score_regions"


@dataclass
class ScoreRegionsConfig:
    """Inputs, models (URIs or paths; None = that model is not used), output and scoring options."""

    regions: str
    out: str
    images: str | None = None
    tabular_model: str | None = None
    imagery_model: str | None = None
    fusion_model: str | None = None
    masks_dir: str | None = None
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    resume: bool = False
    progress: bool = True
    device: str = "cpu"
    seed: int = 42
    experiment: str = EXPERIMENT
    run_name: str | None = None
    tracking_uri: str | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.score_regions", description=__doc__.split("\n\n")[0])
    p.add_argument("--regions", required=True, help="region table (.csv or .parquet) with region_id and feature columns")
    p.add_argument("--images", default=None, help="folder of patches: L4S img/image_<region_id>.h5, or paths in an 'image' column")
    p.add_argument("--tabular-model", default=None, help="tabular model URI (runs:/<id>/model, run id or folder)")
    p.add_argument("--imagery-model", default=None, help="segmenter URI (runs:/<id>/segmenter or folder)")
    p.add_argument("--fusion-model", default=None, help="fuser URI (runs:/<id>/fuser.json, run id or JSON path)")
    p.add_argument("--out", required=True, help="output CSV (written atomically)")
    p.add_argument("--masks-dir", default=None, help="where mask PNGs go (default: <out stem>_masks/ beside --out)")
    p.add_argument("--no-masks", action="store_true", help="do not write mask PNGs")
    p.add_argument("--policy", default="stacked", choices=POLICIES, help="decision policy (default stacked)")
    p.add_argument("--imagery-weight", type=unit_float, default=0.5, help="imagery weight of --policy weighted")
    p.add_argument("--weighted-threshold", type=unit_float, default=0.5, help="threshold of --policy weighted")
    p.add_argument("--batch-size", type=positive_int, default=512, help="regions per batch (default 512)")
    p.add_argument("--imagery-batch-size", type=positive_int, default=16, help="patches per segmenter forward pass")
    p.add_argument("--top-k", type=int, default=3, help="top SHAP features per region (0: none)")
    p.add_argument("--strict-images", action="store_true", help="a missing/unreadable image is an error, not a fallback")
    p.add_argument("--resume", action="store_true", help="continue from <out>.partial, skipping regions already scored")
    p.add_argument("--device", default="cpu", help="segmenter device: cpu, cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> ScoreRegionsConfig:
    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {args.top_k}")
    if args.tabular_model is None and args.imagery_model is None:
        raise ValueError("give --tabular-model, --imagery-model or both")
    return ScoreRegionsConfig(
        regions=args.regions, out=args.out, images=args.images, tabular_model=args.tabular_model,
        imagery_model=args.imagery_model, fusion_model=args.fusion_model, masks_dir=args.masks_dir,
        scoring=ScoringConfig(
            policy=args.policy, batch_size=args.batch_size, imagery_batch_size=args.imagery_batch_size,
            top_k=args.top_k, write_masks=not args.no_masks, strict_images=args.strict_images,
            imagery_weight=args.imagery_weight, weighted_threshold=args.weighted_threshold,
        ),
        resume=args.resume,
        progress=not args.no_progress, device=args.device, seed=args.seed,
        experiment=args.experiment or EXPERIMENT, run_name=args.run_name, tracking_uri=args.tracking_uri,
    )


def load_models(cfg: ScoreRegionsConfig) -> tuple[Any, Any, Any]:
    """(tabular model | None, segmenter | None, fuser | None) from the configured URIs."""
    from fusion.stacking import load_fuser

    tab = seg = fus = None
    if cfg.tabular_model:
        from tabular.serving import load_tabular_model

        tab = load_tabular_model(cfg.tabular_model, cfg.tracking_uri)
    if cfg.imagery_model:
        from imagery.serving import load_segmenter  # torch is needed only here

        seg = load_segmenter(cfg.imagery_model, device=cfg.device)
    if cfg.fusion_model:
        fus = load_fuser(cfg.fusion_model)
    return tab, seg, fus


def score(cfg: ScoreRegionsConfig, log: Any = print) -> dict[str, Any]:
    """Run the scoring job in an MLflow run; returns the counts of :func:`fusion.scoring.score_table` + run id."""
    import mlflow

    from fusion.regions import read_region_table
    from fusion.scoring import RegionScorer, score_table

    out = Path(cfg.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder, expected a CSV file path")
    if cfg.images is not None and not Path(cfg.images).is_dir():
        raise FileNotFoundError(f"--images folder not found: {cfg.images}")
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = setup_tracking(cfg.tracking_uri)
    with tracked_run(cfg.experiment, cfg, run_name=cfg.run_name, tracking_uri=uri) as run:
        table = read_region_table(cfg.regions)
        log_fingerprint(fingerprint_dataframe(table, source=str(cfg.regions)))
        tab, seg, fus = load_models(cfg)
        if fus is not None:
            mlflow.set_tags({f"input_{k}": str(v) for k, v in fus.meta_.items() if k.endswith("run_id")})
        scorer = RegionScorer(tab, seg, fus, cfg.scoring)

        t0 = time.perf_counter()
        info = score_table(table, scorer, out, cfg.images, cfg.masks_dir, resume=cfg.resume, progress=cfg.progress)
        seconds = time.perf_counter() - t0
        mlflow.log_metrics({
            "regions": info["regions"], "scored": info["scored"], "skipped": info["skipped"],
            "score_seconds": seconds, "regions_per_second": info["scored"] / max(seconds, 1e-9),
            **{f"evidence_{k}": v for k, v in info["evidence"].items()},
        })
        log(
            f"scored {info['scored']} region(s) ({info['skipped']} already done) in {seconds:.1f}s -> {out}; "
            f"evidence: {', '.join(f'{k}={v}' for k, v in info['evidence'].items())}"
        )
        info["run_id"] = run.info.run_id
        return info


def main(argv: Sequence[str] | None = None) -> int:
    cfg = config_from_args(build_parser().parse_args(argv))
    score(cfg, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
