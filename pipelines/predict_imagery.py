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

import argparse
import sys
from collections.abc import Sequence

from common.cli import add_common_args, print_summary, run_main
from common.seed import seed_everything
from imagery.inference import PredictConfig
from imagery.inference.config import DEFAULT_OVERLAP
from pipelines._segmenter_args import add_segmenter_args, engine_spec_of

EXPERIMENT = "imagery-predict"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.predict_imagery", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="image_N.h5, a folder of them, or a scene .npy/.h5 (H, W, 14)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap for scenes, px (default %(default)s)"
    )
    p.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    add_segmenter_args(p)
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from common.tracking import setup_tracking, tracked_run  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from imagery.inference.predict import predict_inputs  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    cfg = PredictConfig(
        model_uri=args.model,
        input=args.input,
        out=args.out,
        tta=args.tta,
        vote=args.vote,
        morphology=args.morphology,
        threshold=args.threshold,
        batch_size=args.batch_size,
        overlap=args.overlap,
        overlays=not args.no_overlays,
        device=args.device,
        runtime=engine_spec_of(args),
        seed=args.seed,
    )
    seed_everything(cfg.seed)
    uri = setup_tracking(args.tracking_uri, verbose=args.verbose)
    with tracked_run(args.experiment or EXPERIMENT, cfg, run_name=args.run_name) as run:
        result = predict_inputs(cfg, tracking_uri=uri)
    flagged = sum(1 for r in result.rows if int(r["landslide_pixels"]) > 0)
    print_summary(
        {
            "run_id": run.info.run_id,
            "out": str(result.out),
            "predictions": len(result.rows),
            "with_landslides": flagged,
        },
        as_json=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
