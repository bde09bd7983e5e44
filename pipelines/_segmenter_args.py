"""Options shared by the commands that run a logged segmenter (``evaluate_imagery``, ``predict_imagery``,
``predict_scene``, ``score_regions``): the option groups :class:`EngineOptions`, :class:`SegmenterOptions` and
:class:`SceneSegmenterOptions`."""

from __future__ import annotations

from dataclasses import dataclass

from common.cli import non_negative_int, positive_int, unit_float
from common.options import arg, nested
from imagery.inference.config import (
    DEFAULT_BATCH,
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
    batch_size: int = arg("patches per forward pass (default %(default)s)", default=DEFAULT_BATCH, type=positive_int)
    device: str = arg("cuda, cpu or auto (default %(default)s)", default="auto")
    engine: EngineOptions = nested(EngineOptions)


@dataclass
class SceneSegmenterOptions:
    """segmenter (None: as stored with the model)"""

    model: str | None = arg(MODEL_HELP + " (default: models:/landslide-imagery@champion)", default=None)
    tta: TtaMode | None = arg("test-time augmentation (default: stored with the model)", default=None)
    threshold: float | None = arg("override the stored threshold", default=None, type=unit_float)
    batch_size: int = arg("tiles per forward pass (default %(default)s)", default=DEFAULT_BATCH, type=positive_int)
    lanes: int = arg(
        "CPU lanes: each batch split over N threads of one core each (preprocessing and network; eager torch "
        "paths); 0: one per torch thread where the path allows it, 1: none (default %(default)s)",
        default=0,
        type=non_negative_int,
    )
    device: str = arg("cuda, cpu or auto (default %(default)s)", default="auto")
    engine: EngineOptions = nested(EngineOptions)
