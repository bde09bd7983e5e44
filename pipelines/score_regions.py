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

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import RunOptions, UserError, positive_int, unit_float
from common.options import arg, fill, nested
from fusion.choices import Policy
from pipelines._command import Command, Context
from pipelines._segmenter_args import EngineOptions

if TYPE_CHECKING:
    from fusion.config import ScoreRegionsConfig

EXPERIMENT = "score_regions"


@dataclass
class ScoringOptions:
    """scoring"""

    policy: Policy = arg("decision policy (default stacked)", default="stacked")
    imagery_weight: float = arg("imagery weight of --policy weighted", default=0.5, type=unit_float)
    weighted_threshold: float = arg("threshold of --policy weighted", default=0.5, type=unit_float)
    batch_size: int = arg("regions per batch (default 512)", default=512, type=positive_int)
    imagery_batch_size: int = arg("patches per segmenter forward pass", default=16, type=positive_int)
    top_k: int = arg("top SHAP features per region (0: none)", default=3)
    no_masks: bool = arg("do not write mask PNGs", default=False)
    strict_images: bool = arg("a missing/unreadable image is an error, not a fallback", default=False)
    allow_missing_images: bool = arg(
        "score with the tabular model alone even when no region has a readable image", default=False
    )
    allow_other_base_models: bool = arg(
        "use base models that are not the fusion model's base runs (a warning is written with every row)",
        default=False,
    )


@dataclass
class ScoreRegionsOptions:
    """The flags of ``python -m pipelines.score_regions`` (logged as the run's ``config.json``)."""

    regions: str = arg("region table (.csv or .parquet) with region_id and feature columns")
    out: str = arg("output table, .csv or .parquet (written atomically)")
    images: str | None = arg(
        "folder of patches: L4S img/image_<region_id>.h5, or paths in an 'image' column", default=None
    )
    tabular_model: str | None = arg("tabular model URI (runs:/<id>/model, run id or folder)", default=None)
    imagery_model: str | None = arg("segmenter URI (runs:/<id>/segmenter or folder)", default=None)
    fusion_model: str | None = arg("fuser URI (runs:/<id>/fuser.json, run id or JSON path)", default=None)
    masks_dir: str | None = arg("where mask PNGs go (default: <out stem>_masks/ beside --out)", default=None)
    resume: bool = arg("continue from <out>.partial, skipping regions already scored", default=False)
    device: str = arg("segmenter device: cpu, cuda or auto", default="cpu")
    no_progress: bool = arg("no progress bar", default=False)
    scoring: ScoringOptions = nested(ScoringOptions)
    engine: EngineOptions = nested(EngineOptions)
    run: RunOptions = nested(RunOptions)


def library_config(o: ScoreRegionsOptions, ctx: Context | None = None) -> ScoreRegionsConfig:
    """The library's config for these options (what the run logs as params)."""
    from fusion.config import ScoreRegionsConfig  # noqa: PLC0415 - pandas loads when the command runs
    from fusion.scoring import ScoringConfig  # noqa: PLC0415 - pandas loads when the command runs

    if o.scoring.top_k < 0:
        raise UserError(f"--top-k must be >= 0, got {o.scoring.top_k}")
    if o.tabular_model is None and o.imagery_model is None:
        raise UserError("give --tabular-model, --imagery-model or both")
    scoring = fill(ScoringConfig, o.scoring, write_masks=not o.scoring.no_masks)
    return fill(
        ScoreRegionsConfig,
        o,
        o.run,
        scoring=scoring,
        progress=not o.no_progress,
        runtime=o.engine.spec(),
        experiment=o.run.experiment or EXPERIMENT,
    )


def run(o: ScoreRegionsOptions, ctx: Context) -> dict[str, object]:
    """Score the regions (:func:`fusion.experiment.score_regions`)."""
    from fusion.experiment import score_regions  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    result = ctx.result = score_regions(ctx.config, tracking_uri=ctx.tracking_uri, log=ctx.log)
    return {
        "run_id": result.run_id,
        "out": result.out,
        "scored": result.scored,
        "skipped": result.skipped,
        "evidence": result.evidence,
        "files": written_files(ctx.config, result),
    }


def written_files(cfg: ScoreRegionsConfig, result: object) -> list[str]:
    """The output table, and the folder of mask PNGs when masks were written."""
    out = Path(str(getattr(result, "out", cfg.out)))
    files = [str(out)]
    if cfg.scoring.write_masks:
        masks = Path(cfg.masks_dir) if cfg.masks_dir else out.with_name(f"{out.stem}_masks")
        if masks.exists():
            files.append(f"{masks}/")
    return files


COMMAND = Command("score_regions", ScoreRegionsOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=library_config)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
