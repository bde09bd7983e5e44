"""``python -m pipelines.predict_imagery``: masks, probability maps and overlays from a logged segmenter.

``--input`` is an L4S patch ``image_N.h5``, a folder of them, or a scene array (``.npy`` or ``.h5``
of shape ``(H, W, 14)``, larger than 128 px), which is tiled into 128 x 128 windows with overlap and
stitched. Per item it writes ``mask_<N>.h5`` (L4S format, uint8 0/1), ``prob_<N>.npy`` (float32) and
``overlay_<N>.png`` into ``--out`` (atomically), plus ``predictions.csv`` (patch probability, landslide
pixels, flagged) for all items.

Example::

    python -m pipelines.predict_imagery --model runs:/<run_id> --input ../shared/data/landslide4sense_unlabeled_suraj/img --out preds/
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import atomic_write
from common.cli import add_common_args, run_main
from imagery.config import PredictConfig
from pipelines._segmenter_args import add_segmenter_args

EXPERIMENT = "imagery-predict"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.predict_imagery", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="image_N.h5, a folder of them, or a scene .npy/.h5 (H, W, 14)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap for scenes, px (0 <= overlap < 128)")
    p.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    add_segmenter_args(p)
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from common.fingerprint import fingerprint_files
    from common.seed import seed_everything
    from common.tracking import log_fingerprint, setup_tracking, tracked_run
    from imagery.predict import predict_scene, read_inputs, write_outputs
    from imagery.serving import load_segmenter

    args = build_parser().parse_args(argv)
    cfg = PredictConfig(model_uri=args.model, input=args.input, out=args.out, tta=args.tta, vote=args.vote,
                        morphology=args.morphology, threshold=args.threshold, batch_size=args.batch_size,
                        overlap=args.overlap, overlays=not args.no_overlays, device=args.device, seed=args.seed)
    if not 0 <= cfg.overlap < cfg.tile:
        raise ValueError(f"--overlap must be in [0, {cfg.tile - 1}], got {cfg.overlap}")
    seed_everything(cfg.seed)
    items = read_inputs(cfg.input, cfg.tile)  # validate every input before writing anything
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    setup_tracking(args.tracking_uri)
    segmenter = load_segmenter(cfg.model_uri, device=cfg.device)
    opts = {"tta": cfg.tta, "vote": cfg.vote, "morphology": None, "threshold": cfg.threshold}
    t = segmenter.threshold if cfg.threshold is None else cfg.threshold
    rows = []
    with tracked_run(args.experiment or EXPERIMENT, cfg, run_name=args.run_name, tracking_uri=args.tracking_uri):
        log_fingerprint(fingerprint_files([it.source for it in items], source=cfg.input))
        for item in items:
            if item.is_scene:
                prob = predict_scene(lambda b: segmenter.predict(b, batch_size=cfg.batch_size, **opts)["prob"],
                                     item.image, tile=cfg.tile, overlap=cfg.overlap, batch_size=cfg.batch_size)
                mask = _finish_mask(prob, t, cfg.morphology or segmenter.meta.morphology)
                patch_prob = float("nan")
            else:
                res = segmenter.predict(item.image[None], batch_size=1, tta=cfg.tta, vote=cfg.vote,
                                        morphology=cfg.morphology, threshold=cfg.threshold)
                prob, mask, patch_prob = res["prob"][0], res["mask"][0], float(res["patch_prob"][0])
            write_outputs(out, item.name, item.image, prob, mask, overlay=cfg.overlays)
            rows.append({"name": item.name, "source": item.source, "height": prob.shape[0], "width": prob.shape[1],
                         "patch_prob": patch_prob, "landslide_pixels": int(mask.sum()), "scene": item.is_scene})
        with atomic_write(out / "predictions.csv") as fh:
            pd.DataFrame(rows).to_csv(fh, index=False)
    print(f"wrote {len(rows)} prediction(s) to {out}")
    return 0


def _finish_mask(prob: np.ndarray, threshold: float, morphology: str | None) -> np.ndarray:
    from imagery.postprocess import apply_threshold
    from imagery.postprocess import morphology as morph

    mask = np.asarray(apply_threshold(prob, threshold), dtype=np.uint8)
    if morphology and morphology != "none":
        mask = np.asarray(morph(mask[None], morphology), dtype=np.uint8)[0]
    return mask


if __name__ == "__main__":
    raise SystemExit(run_main(main))
