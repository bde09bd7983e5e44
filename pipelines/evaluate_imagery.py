"""``python -m pipelines.evaluate_imagery``: score a logged segmenter on a labelled L4S split.

``--data`` may also be a folder of georeferenced image/label GeoTIFF chips (``--image-bands``,
``--image-scale``, ``--label-map``, as for ``train_imagery``); ignored label pixels count in no metric.
For a model trained on a Sen12Landslides temporal set (``train_imagery --temporal ...``), ``--data`` is a folder of
Sen12Landslides patches: their pre/post-event composites are built from each time series as for training (a
temporal model refuses single-date data, and a single-date model a Sen12Landslides folder, in one line).

Prints and logs (MLflow) the landslide-class precision/recall/F1/IoU accumulated over all labelled pixels
(``ls_*``, the primary numbers), the seed's 2-class means (``*_2class``, for comparison with its
tables only) and patch-level detection scores (``patch_*``).

Example::

    python -m pipelines.evaluate_imagery --model runs:/<run_id> --data ../L4S --split test --tta rot4
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from common.cli import RunOptions, positive_int
from common.options import arg, fill, nested
from imagery.data.choices import ImageScale
from imagery.inference.config import EvalConfig
from pipelines._command import Command, Context
from pipelines._segmenter_args import SegmenterOptions

EXPERIMENT = "imagery-evaluate"


@dataclass
class EvaluateImageryOptions:
    """The flags of ``python -m pipelines.evaluate_imagery`` (logged as the run's ``config.json``)."""

    data: str = arg(
        "L4S folder (official/hf/plain layout), prepare_imagery cache, a chip folder (images/ + labels/), or a "
        "Sen12Landslides folder (*_s2_*.nc) for a temporal model"
    )
    image_bands: list[str] | None = arg("chips: band order of the image files", default=None)
    image_scale: ImageScale = arg("chips: value scale (default auto)", default="auto")
    label_map: str | None = arg("chips: raw label -> 0/1/ignore, e.g. 0:ignore,1:0,2:1", default=None)
    tile: int = arg("chips: tile size, px (default 128)", default=128, type=positive_int)
    split: str = arg("train, validation or test (default test)", default="test")
    layout: str | None = arg("force the layout: official, hf, plain or cache", default=None)
    segmenter: SegmenterOptions = nested(SegmenterOptions)
    run: RunOptions = nested(RunOptions)


def library_config(o: EvaluateImageryOptions, ctx: Context | None = None) -> EvalConfig:
    """The library's config for these options (what the run logs as params)."""
    return fill(EvalConfig, o, o.segmenter, o.run, model_uri=o.segmenter.model, runtime=o.segmenter.engine.spec())


def run(o: EvaluateImageryOptions, ctx: Context) -> None:
    """Score the split (:func:`imagery.inference.evaluate.evaluate_split`) and print the metrics as one JSON object.

    The metrics are printed here, indented, with or without ``--json`` (scripts read them), so the runner prints
    no second summary; the command writes no files (the metrics go to the MLflow run)."""
    from imagery.inference.evaluate import evaluate_split  # noqa: PLC0415 - torch loads when the command runs

    result = ctx.result = evaluate_split(ctx.config, tracking_uri=ctx.tracking_uri)
    summary = {
        "run_id": ctx.run_id,
        "n_patches": result.n_patches,
        **{k: round(float(v), 6) if math.isfinite(v) else None for k, v in result.metrics.items()},
        "engine": result.engine,
    }
    print(json.dumps(summary, indent=2), flush=True)


COMMAND = Command(
    "evaluate_imagery", EvaluateImageryOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=library_config
)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
