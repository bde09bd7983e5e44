"""``python -m pipelines.export_imagery``: a logged segmenter as an ONNX file for fast CPU serving.

The file holds the network (preprocessed input ``x (B, C, H, W)`` float32 with a dynamic batch, logits
out) and the model's metadata; the preprocessing (cleaning, engineered channels, normalisation) and the
post-processing (softmax, TTA, voting, threshold, morphology) stay in Python and are the same code as
for the torch model: see :mod:`imagery.inference.onnx`. Run it with ``--runtime onnx`` in
``predict_imagery`` / ``evaluate_imagery`` / ``score_regions``, or give the ``.onnx`` file as the model.

``--int8`` quantizes it (static post-training quantization, calibrated on ``--calibration`` patches,
default the built-in synthetic ones): about twice as fast again on a CPU, with a small loss of accuracy
(the parity tests bound it on the real L4S patches).

Example::

    python -m pipelines.export_imagery --model runs:/<run_id> --out model.onnx [--int8 --calibration L4S/]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.cli import UserError, add_common_args, print_summary, run_main

EXPERIMENT = "imagery-export"


@dataclass
class ExportConfig:
    """What to export: the segmenter URI, the output ``.onnx`` path, int8 quantization and its calibration data."""

    model_uri: str
    out: str
    int8: bool = False
    calibration: str | None = None
    calibration_split: str = "train"
    seed: int = 42


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.export_imagery", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="segmenter URI: runs:/<run_id>[/segmenter], models:/... or a folder")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--int8", action="store_true", help="quantize to int8 (static, calibrated)")
    p.add_argument(
        "--calibration", default=None, help="L4S folder or cache for the int8 calibration (default: synthetic)"
    )
    p.add_argument("--calibration-split", default="train", help="split of --calibration (default train)")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    import numpy as np  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    import torch  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.fingerprint import fingerprint_files  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from common.tracking import log_fingerprint, setup_tracking, tracked_run  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from imagery.data import load_patches  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from imagery.inference import load_segmenter  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from imagery.inference.onnx import calibration_inputs, export_onnx  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    cfg = ExportConfig(args.model, args.out, args.int8, args.calibration, args.calibration_split, args.seed)
    if Path(cfg.out).suffix != ".onnx":
        raise UserError(f"--out {cfg.out}: expected a path ending in .onnx")
    uri = setup_tracking(args.tracking_uri, verbose=args.verbose)
    with tracked_run(args.experiment or EXPERIMENT, cfg, run_name=args.run_name) as run:
        seg = load_segmenter(cfg.model_uri, "cpu", tracking_uri=uri)
        data = None
        if cfg.int8 and cfg.calibration:
            patches = load_patches(cfg.calibration, cfg.calibration_split)
            data = seg.preprocess(np.asarray(patches.images[:64]), torch.device("cpu")).numpy()
        elif cfg.int8:
            data = calibration_inputs(seg.meta, seed=cfg.seed)
        path = export_onnx(seg.model, seg.meta, cfg.out, int8=cfg.int8, calibration=data)
        log_fingerprint(fingerprint_files([path], source=cfg.out), prefix="onnx", context="export")
        mlflow.log_artifact(str(path))
    summary = {"run_id": run.info.run_id, "out": str(path), "int8": cfg.int8, "megabytes": path.stat().st_size / 1e6}
    print_summary(summary, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
