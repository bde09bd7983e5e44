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

from dataclasses import dataclass
from pathlib import Path

from common.cli import RunOptions, UserError
from common.options import arg, nested
from pipelines._command import Command, Context

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


@dataclass
class ExportImageryOptions:
    """The flags of ``python -m pipelines.export_imagery`` (logged as the run's ``config.json``)."""

    model: str = arg("segmenter URI: runs:/<run_id>[/segmenter], models:/... or a folder")
    out: str = arg("the .onnx file to write")
    int8: bool = arg("quantize to int8 (static, calibrated)", default=False)
    calibration: str | None = arg("L4S folder or cache for the int8 calibration (default: synthetic)", default=None)
    calibration_split: str = arg("split of --calibration (default train)", default="train")
    run: RunOptions = nested(RunOptions)


def library_config(o: ExportImageryOptions, ctx: Context | None = None) -> ExportConfig:
    """What the run logs as params; the output must be an ``.onnx`` path."""
    if Path(o.out).suffix != ".onnx":
        raise UserError(f"--out {o.out}: expected a path ending in .onnx")
    return ExportConfig(o.model, o.out, o.int8, o.calibration, o.calibration_split, o.run.seed)


def run(o: ExportImageryOptions, ctx: Context) -> dict[str, object]:
    """Export (:func:`imagery.inference.onnx.export_onnx`), calibrated for int8 on real or synthetic patches."""
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    import numpy as np  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    import torch  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.fingerprint import fingerprint_files  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from common.tracking import log_fingerprint  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from imagery.data import load_patches  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from imagery.inference import load_segmenter  # noqa: PLC0415 - loaded when the command runs: --help stays fast
    from imagery.inference.onnx import calibration_inputs, export_onnx  # noqa: PLC0415 - loaded when the command runs

    cfg: ExportConfig = ctx.config
    seg = load_segmenter(cfg.model_uri, "cpu", tracking_uri=ctx.tracking_uri)
    data = None
    if cfg.int8 and cfg.calibration:
        patches = load_patches(cfg.calibration, cfg.calibration_split)
        data = seg.preprocess(np.asarray(patches.images[:64]), torch.device("cpu")).numpy()
    elif cfg.int8:
        data = calibration_inputs(seg.meta, seed=cfg.seed)
    path = ctx.result = export_onnx(seg.model, seg.meta, cfg.out, int8=cfg.int8, calibration=data)
    log_fingerprint(fingerprint_files([path], source=cfg.out), prefix="onnx", context="export")
    mlflow.log_artifact(str(path))
    return {"out": str(path), "int8": cfg.int8, "megabytes": path.stat().st_size / 1e6, "files": [str(path)]}


COMMAND = Command(
    "export_imagery", ExportImageryOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=library_config
)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
