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

import argparse
import json
import math
import sys
from collections.abc import Sequence

from common.cli import add_common_args, csv_list, positive_int, run_main
from common.seed import seed_everything
from imagery.data.chips import IMAGE_SCALES
from imagery.inference import EvalConfig
from pipelines._segmenter_args import add_segmenter_args, engine_spec_of

EXPERIMENT = "imagery-evaluate"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.evaluate_imagery", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        required=True,
        help="L4S folder (official/hf/plain layout), prepare_imagery cache, a chip folder (images/ + labels/), or a "
        "Sen12Landslides folder (*_s2_*.nc) for a temporal model",
    )
    p.add_argument("--image-bands", type=csv_list, default=None, help="chips: band order of the image files")
    p.add_argument("--image-scale", default="auto", choices=IMAGE_SCALES, help="chips: value scale (default auto)")
    p.add_argument("--label-map", default=None, help="chips: raw label -> 0/1/ignore, e.g. 0:ignore,1:0,2:1")
    p.add_argument("--tile", type=positive_int, default=128, help="chips: tile size, px (default 128)")
    p.add_argument("--split", default="test", help="train, validation or test (default test)")
    p.add_argument("--layout", default=None, help="force the layout: official, hf, plain or cache")
    add_segmenter_args(p)
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from common.tracking import setup_tracking, tracked_run  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from imagery.inference.evaluate import evaluate_split  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    cfg = EvalConfig(
        model_uri=args.model,
        data=args.data,
        split=args.split,
        layout=args.layout,
        image_bands=args.image_bands,
        image_scale=args.image_scale,
        label_map=args.label_map,
        tile=args.tile,
        tta=args.tta,
        vote=args.vote,
        morphology=args.morphology,
        threshold=args.threshold,
        batch_size=args.batch_size,
        device=args.device,
        runtime=engine_spec_of(args),
        seed=args.seed,
    )
    seed_everything(cfg.seed)
    uri = setup_tracking(args.tracking_uri, verbose=args.verbose)
    with tracked_run(args.experiment or EXPERIMENT, cfg, run_name=args.run_name) as run:
        result = evaluate_split(cfg, tracking_uri=uri)
    print(
        json.dumps(
            {
                "run_id": run.info.run_id,
                "n_patches": result.n_patches,
                **{k: round(float(v), 6) if math.isfinite(v) else None for k, v in result.metrics.items()},
                "engine": result.engine,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
