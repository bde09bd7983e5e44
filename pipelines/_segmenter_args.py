"""Options shared by the commands that run a logged segmenter (``evaluate_imagery``, ``predict_imagery``,
``predict_scene``, ``score_regions``): the option groups :class:`EngineOptions`, :class:`SegmenterOptions` and
:class:`SceneSegmenterOptions`, and the same flags for a parser written by hand (:func:`add_segmenter_args`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from common.cli import positive_int, unit_float
from common.options import arg, nested
from imagery.inference.config import (
    MORPHOLOGY,
    PRECISIONS,
    RUNTIMES,
    TTA_MODES,
    Morphology,
    Precision,
    Runtime,
    TtaMode,
)

MODEL_HELP = "segmenter URI: runs:/<run_id>[/segmenter], models:/NAME@ALIAS or /VERSION, or a folder"
RUNTIME_HELP = (
    "auto (the fastest path that passes the fp32 parity check, measured once per model and machine), "
    "torch, or onnx: ONNX Runtime on the CPU (a torch model is exported; an .onnx model always runs on it)"
)
PRECISION_HELP = "auto, fp32, bf16 (torch autocast) or int8 (ONNX Runtime); with --runtime auto it picks the path"


@dataclass
class EngineOptions:
    """inference engine"""

    runtime: Runtime = arg(RUNTIME_HELP + " (default %(default)s)", default="auto")
    precision: Precision = arg(PRECISION_HELP + " (default %(default)s)", default="auto")

    def spec(self) -> str:
        """The engine spec the configs carry (``auto``, ``torch``, ``torch:bf16``...)."""
        from imagery.inference.engine import engine_spec  # noqa: PLC0415 - torch loads when the command runs

        return engine_spec(self.runtime, self.precision)


@dataclass
class SegmenterOptions:
    """segmenter (None: as stored with the model)"""

    model: str = arg(MODEL_HELP)
    tta: TtaMode | None = arg("test-time augmentation (default: stored with the model)", default=None)
    vote: bool | None = arg("vote over the multi-resolution outputs (default: stored with the model)", default=None)
    morphology: Morphology | None = arg("opening/closing of the mask (default: stored with the model)", default=None)
    threshold: float | None = arg("override the stored threshold", default=None, type=unit_float)
    batch_size: int = arg("patches per forward pass (default %(default)s)", default=16, type=positive_int)
    device: str = arg("cuda, cpu or auto (default %(default)s)", default="auto")
    engine: EngineOptions = nested(EngineOptions)


@dataclass
class SceneSegmenterOptions:
    """segmenter (None: as stored with the model)"""

    model: str | None = arg(MODEL_HELP + " (default: models:/landslide-imagery@champion)", default=None)
    tta: TtaMode | None = arg("test-time augmentation (default: stored with the model)", default=None)
    threshold: float | None = arg("override the stored threshold", default=None, type=unit_float)
    batch_size: int = arg("tiles per forward pass (default %(default)s)", default=16, type=positive_int)
    device: str = arg("cuda, cpu or auto (default %(default)s)", default="auto")
    engine: EngineOptions = nested(EngineOptions)


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
