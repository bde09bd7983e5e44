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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from common.cli import UserError, add_common_args, positive_int, print_summary, progress_printer, run_main, unit_float
from fusion.choices import POLICIES
from fusion.config import ScoreRegionsConfig
from fusion.scoring import ScoringConfig
from pipelines._segmenter_args import add_engine_args, engine_spec_of

if TYPE_CHECKING:
    from fusion.experiment import ScoreResult

EXPERIMENT = "score_regions"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.score_regions", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--regions", required=True, help="region table (.csv or .parquet) with region_id and feature columns"
    )
    p.add_argument(
        "--images", default=None, help="folder of patches: L4S img/image_<region_id>.h5, or paths in an 'image' column"
    )
    p.add_argument("--tabular-model", default=None, help="tabular model URI (runs:/<id>/model, run id or folder)")
    p.add_argument("--imagery-model", default=None, help="segmenter URI (runs:/<id>/segmenter or folder)")
    p.add_argument("--fusion-model", default=None, help="fuser URI (runs:/<id>/fuser.json, run id or JSON path)")
    p.add_argument("--out", required=True, help="output table, .csv or .parquet (written atomically)")
    p.add_argument("--masks-dir", default=None, help="where mask PNGs go (default: <out stem>_masks/ beside --out)")
    p.add_argument("--no-masks", action="store_true", help="do not write mask PNGs")
    p.add_argument("--policy", default="stacked", choices=POLICIES, help="decision policy (default stacked)")
    p.add_argument("--imagery-weight", type=unit_float, default=0.5, help="imagery weight of --policy weighted")
    p.add_argument("--weighted-threshold", type=unit_float, default=0.5, help="threshold of --policy weighted")
    p.add_argument("--batch-size", type=positive_int, default=512, help="regions per batch (default 512)")
    p.add_argument("--imagery-batch-size", type=positive_int, default=16, help="patches per segmenter forward pass")
    p.add_argument("--top-k", type=int, default=3, help="top SHAP features per region (0: none)")
    p.add_argument(
        "--strict-images", action="store_true", help="a missing/unreadable image is an error, not a fallback"
    )
    p.add_argument(
        "--allow-missing-images",
        action="store_true",
        help="score with the tabular model alone even when no region has a readable image",
    )
    p.add_argument(
        "--allow-other-base-models",
        action="store_true",
        help="use base models that are not the fusion model's base runs (a warning is written with every row)",
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>.partial, skipping regions already scored")
    p.add_argument("--device", default="cpu", help="segmenter device: cpu, cuda or auto")
    add_engine_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> ScoreRegionsConfig:
    if args.top_k < 0:
        raise UserError(f"--top-k must be >= 0, got {args.top_k}")
    if args.tabular_model is None and args.imagery_model is None:
        raise UserError("give --tabular-model, --imagery-model or both")
    return ScoreRegionsConfig(
        regions=args.regions,
        out=args.out,
        images=args.images,
        tabular_model=args.tabular_model,
        imagery_model=args.imagery_model,
        fusion_model=args.fusion_model,
        masks_dir=args.masks_dir,
        scoring=ScoringConfig(
            policy=args.policy,
            batch_size=args.batch_size,
            imagery_batch_size=args.imagery_batch_size,
            top_k=args.top_k,
            write_masks=not args.no_masks,
            strict_images=args.strict_images,
            allow_missing_images=args.allow_missing_images,
            allow_other_base_models=args.allow_other_base_models,
            imagery_weight=args.imagery_weight,
            weighted_threshold=args.weighted_threshold,
        ),
        resume=args.resume,
        progress=not args.no_progress,
        device=args.device,
        runtime=engine_spec_of(args),
        seed=args.seed,
        experiment=args.experiment or EXPERIMENT,
        run_name=args.run_name,
        tracking_uri=args.tracking_uri,
    )


def score(cfg: ScoreRegionsConfig, log: Any = print, *, verbose: bool = False) -> ScoreResult:
    """Set up the store, open the run and score (:func:`fusion.experiment.score_regions`)."""
    from common.tracking import setup_tracking, tracked_run  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from fusion.experiment import score_regions  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    uri = setup_tracking(cfg.tracking_uri, verbose=verbose)
    with tracked_run(cfg.experiment, cfg, run_name=cfg.run_name):
        return score_regions(cfg, tracking_uri=uri, log=log)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    result = score(cfg, log=progress_printer(args.json), verbose=args.verbose)
    summary = {
        "run_id": result.run_id,
        "out": result.out,
        "scored": result.scored,
        "skipped": result.skipped,
        "evidence": result.evidence,
    }
    print_summary(summary, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
