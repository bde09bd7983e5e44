"""``python -m pipelines.quickstart``: the main job, end to end on built-in paired synthetic regions.

1. Generate paired regions (:mod:`fusion.demo.paired`): a tabular row and a Sentinel-2-like patch per region
   sharing one ground truth; split them into training regions and held-out test regions (stratified).
2. Tabular model (``pipelines.train_tabular``): k-fold CV on the training regions gives out-of-fold
   probabilities; the model refitted on all training regions is the one that scores the test regions.
3. Imagery model (as ``pipelines.train_imagery --folds 2``): a small network of the imagery registry
   (default ``unet`` at base width 8, single-resolution head, 14 raw bands) trained for 10 epochs.
   Imagery OOF is obtained by 2-fold cross-fitting on the training regions: the model of fold A
   (trained on half B, with its own validation split carved from B) predicts half A, and vice versa,
   so every training region gets exactly one out-of-fold patch probability. Full 5-fold imagery
   training does not fit the 5-minute CPU budget; 2 folds is the cheapest honest scheme. The test
   regions are scored by the fold-0 model (trained on half the training regions), i.e. the same kind
   of model whose OOF predictions the stacker was fitted on; no model ever sees a test region.
4. Stacker (``pipelines.train_fusion``) on the two OOF tables only.
5. Score the test regions (``pipelines.score_regions``) and print ROC-AUC, PR-AUC and F1 of the
   tabular, imagery and fused probabilities with paired bootstrap 95% intervals.
6. Assess the same held-out regions the way an analyst would (``pipelines.assess``): they are laid
   out as a georeferenced world (:mod:`fusion.demo.world`: a Sentinel-2-like scene, a DEM, one factor
   raster per tabular feature, region polygons and the landslide inventory, in UTM 33N under
   ``OUT_DIR/world``); ``assess`` reads the regions from ``regions.gpkg``, segments the scene,
   takes zonal statistics of the factor rasters, fuses both models and writes
   ``OUT_DIR/assess/report.html`` (with ``regions.geojson``, ``landslides.geojson``,
   ``probability.tif``). The fused ROC-AUC of this path is printed beside the patch path's.

Every step is an MLflow run in the experiment ``quickstart``; compare them with the printed
``mlflow ui`` command. Outputs (scores, masks, metrics) go to ``--out-dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from common.cli import RunOptions, positive_int
from common.options import arg, fill, nested
from pipelines._command import Command, Context
from pipelines._quickstart_config import EXPERIMENT, QuickstartConfig


@dataclass
class QuickstartOptions:
    """The flags of ``python -m pipelines.quickstart`` (the job's sizes: :class:`QuickstartConfig`)."""

    n_regions: int = arg("paired regions to generate", default=800, type=positive_int)
    patch_size: int = arg("patch side in pixels", default=32, type=positive_int)
    test_fraction: float = arg("share of regions held out for the final scores", default=0.3)
    tabular_folds: int = arg("CV folds of the tabular model", default=5, type=positive_int)
    imagery_model: str = arg("imagery registry model", default="small_rau_net1")
    imagery_width: int = arg("imagery base width", default=8, type=positive_int)
    imagery_head: str = arg("imagery head", default="multires")
    imagery_channels: int = arg("imagery channel set", default=23)
    imagery_epochs: int = arg("imagery epochs", default=10, type=positive_int)
    imagery_lr: float = arg("imagery learning rate", default=1e-2)
    imagery_batch_size: int = arg("imagery batch size", default=16, type=positive_int)
    imagery_precision: Literal["auto", "fp32", "bf16"] = arg(
        "imagery training precision (default fp32, so that the README's numbers hold on every CPU; auto: bf16 "
        "where the CPU has native bf16, else fp32)",
        default="fp32",
    )
    n_bootstrap: int = arg("bootstrap resamples of the 95% intervals", default=1000, type=positive_int)
    out_dir: str = arg("where scores.csv, masks and metrics.csv go", default="quickstart_out")
    progress: bool = arg("show progress bars", default=False)
    no_register: bool = arg("do not register the (synthetic) models in the Model Registry", default=False)
    run: RunOptions = nested(RunOptions)


def run(o: QuickstartOptions, ctx: Context) -> dict[str, Any]:
    """Set up the store and run the job (:func:`pipelines._quickstart_job.run`: it opens one run per step)."""
    from common.tracking import setup_tracking  # noqa: PLC0415 - MLflow loads when the command runs
    from pipelines import _quickstart_job as job  # noqa: PLC0415 - torch and LightGBM load here

    cfg = fill(
        QuickstartConfig,
        o,
        o.run,
        experiment=o.run.experiment or EXPERIMENT,
        register=not o.no_register,
    )
    setup_tracking(cfg.tracking_uri, verbose=o.run.verbose)
    result = ctx.result = job.run(cfg, log=ctx.log)
    out = Path(cfg.out_dir)
    files = sorted(str(p) for p in out.glob("*") if p.is_file()) + sorted(f"{p}/" for p in out.glob("*") if p.is_dir())
    if not o.run.json:
        ctx.say("\nwhat this job made:")
    return {
        "evaluation_run_id": result.evaluation_run_id,
        "tabular_model": f"runs:/{result.tabular_run_id}/model",
        # the run that holds the usable imagery model (issue 17): the fold-0 run, not the cross-fitting parent
        "imagery_model": result.imagery_model,
        "imagery_run_id": job.run_id_of(result.imagery_model),
        "imagery_oof_run_id": result.imagery_run_id,
        "imagery_registered": result.registered.get("imagery", ""),
        "fusion_model": f"runs:/{result.fusion_run_id}/fuser.json",
        "scores": result.scores,
        "files": files,
        "seconds": result.timings["total_s"],
    }


COMMAND = Command("quickstart", QuickstartOptions, run, doc=__doc__)
main = COMMAND.main


def __getattr__(name: str) -> Any:
    """The job's names (``train_imagery_crossfit``, ``QuickstartResult``...), loaded on first use (PEP 562)."""
    from pipelines import _quickstart_job  # noqa: PLC0415 - torch and LightGBM load on first use

    try:
        return getattr(_quickstart_job, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if __name__ == "__main__":
    COMMAND.exit()
