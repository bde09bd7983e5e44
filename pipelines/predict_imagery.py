"""``python -m pipelines.predict_imagery``: masks, probability maps and overlays from a logged segmenter.

``--input`` is an L4S patch ``image_N.h5``, a folder of them, or a scene array (``.npy`` or ``.h5``
of shape ``(H, W, 14)``, larger than 128 px), which is tiled into 128 x 128 windows with overlap and
stitched. Per item it writes ``mask_<N>.h5`` (L4S format, uint8 0/1), ``prob_<N>.npy`` (float32) and
``overlay_<N>.png`` into ``--out`` (atomically), plus ``predictions.csv`` (patch probability, landslide
pixels, flagged) for all items.

Example::

    python -m pipelines.predict_imagery --model runs:/<run_id> \\
        --input ../shared/data/landslide4sense_unlabeled_suraj/img --out preds/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.cli import RunOptions
from common.options import arg, fill, nested
from imagery.inference.config import DEFAULT_OVERLAP, PredictConfig
from pipelines._command import Command, Context
from pipelines._segmenter_args import SegmenterOptions

EXPERIMENT = "imagery-predict"


@dataclass
class PredictImageryOptions:
    """The flags of ``python -m pipelines.predict_imagery`` (logged as the run's ``config.json``)."""

    input: str = arg("image_N.h5, a folder of them, or a scene .npy/.h5 (H, W, 14)")
    out: str = arg("output folder")
    overlap: int = arg("tile overlap for scenes, px (default %(default)s)", default=DEFAULT_OVERLAP)
    overlays: bool = arg("overlay PNGs (default on; --no-overlays skips them)", default=True)
    segmenter: SegmenterOptions = nested(SegmenterOptions)
    run: RunOptions = nested(RunOptions)


def library_config(o: PredictImageryOptions, ctx: Context | None = None) -> PredictConfig:
    """The library's config for these options (what the run logs as params)."""
    return fill(PredictConfig, o, o.segmenter, o.run, model_uri=o.segmenter.model, runtime=o.segmenter.engine.spec())


def run(o: PredictImageryOptions, ctx: Context) -> dict[str, object]:
    """Predict every input (:func:`imagery.inference.predict.predict_inputs`)."""
    from imagery.inference.predict import predict_inputs  # noqa: PLC0415 - torch loads when the command runs

    result = ctx.result = predict_inputs(ctx.config, tracking_uri=ctx.tracking_uri)
    flagged = sum(1 for r in result.rows if int(r["landslide_pixels"]) > 0)
    out = Path(result.out)
    files = sorted(str(p) for p in out.iterdir() if p.is_file()) if out.is_dir() else []
    return {"out": str(result.out), "predictions": len(result.rows), "with_landslides": flagged, "files": files}


COMMAND = Command(
    "predict_imagery", PredictImageryOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=library_config
)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
