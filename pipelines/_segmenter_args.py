"""Flags shared by the commands that run a logged segmenter (``evaluate_imagery``, ``predict_imagery``,
``predict_scene``)."""

from __future__ import annotations

import argparse

from common.cli import positive_int, unit_float
from imagery.inference.config import MORPHOLOGY, PRECISIONS, RUNTIMES, TTA_MODES


def add_segmenter_args(
    p: argparse.ArgumentParser, *, unit: str = "patches", mask_options: bool = True, champion: bool = False
) -> None:
    """``--model`` and the post-processing, batching and device flags; ``None`` = as stored with the model.

    ``unit`` names what a batch holds in the help text; ``mask_options=False`` leaves out ``--vote`` and
    ``--morphology`` (for ``predict_scene``, which thresholds blended tiles itself). ``champion``: ``--model`` may
    be left out, meaning ``models:/landslide-imagery@champion``.
    """
    default = " (default: models:/landslide-imagery@champion)" if champion else ""
    p.add_argument(
        "--model",
        required=not champion,
        default=None,
        help=f"segmenter URI: runs:/<run_id>[/segmenter], models:/NAME@ALIAS or /VERSION, or a folder{default}",
    )
    p.add_argument(
        "--tta", choices=TTA_MODES, default=None, help="test-time augmentation (default: stored with the model)"
    )
    if mask_options:
        p.add_argument(
            "--vote", action=argparse.BooleanOptionalAction, default=None, help="vote over the multi-resolution outputs"
        )
        p.add_argument("--morphology", choices=MORPHOLOGY, default=None, help="opening/closing of the mask")
    p.add_argument("--threshold", type=unit_float, default=None, help="override the stored threshold")
    p.add_argument("--batch-size", type=positive_int, default=16, help=f"{unit} per forward pass (default %(default)s)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default %(default)s)")
    add_engine_args(p)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """``--runtime`` and ``--precision``: the inference path (default: measured fastest on this machine and
    checked against fp32, see :mod:`imagery.inference.engine`); read back with :func:`engine_spec_of`."""
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="auto (the fastest path that passes the fp32 parity check, measured once per model and machine), "
        "torch, or onnx: ONNX Runtime on the CPU (a torch model is exported; an .onnx model always runs on it)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto, fp32, bf16 (torch autocast) or int8 (ONNX Runtime); with --runtime auto it picks the path",
    )


def engine_spec_of(args: argparse.Namespace) -> str:
    """The engine spec the configs carry (``auto``, ``torch``, ``torch:bf16``...) for ``--runtime``/``--precision``."""
    from imagery.inference.engine import engine_spec  # noqa: PLC0415 - torch loads when the command runs, not on --help

    return engine_spec(args.runtime, args.precision)
