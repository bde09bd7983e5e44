"""Using a trained segmenter: pre/post-processing, metrics, evaluation, patch and scene prediction, serving.

Never imports :mod:`imagery.training`.
"""

from imagery.inference.config import EvalConfig, PredictConfig
from imagery.inference.evaluate import evaluate_segmenter, save_pr_curve
from imagery.inference.metrics import SegmentationCounts, patch_detection_metrics, segmentation_metrics
from imagery.inference.postprocess import (
    MORPHOLOGY,
    TTA_MODES,
    ThresholdSweep,
    apply_threshold,
    morphology,
    predict_probs,
    sweep_thresholds,
)
from imagery.inference.predict import (
    blend_weights,
    predict_scene,
    read_inputs,
    save_overlay,
    tile_starts,
    write_outputs,
)
from imagery.inference.segmenter import Segmenter, SegmenterMeta, infer_probs, predict_batch
from imagery.inference.serving import load_segmenter, log_segmenter, save_segmenter_files

__all__ = [
    "MORPHOLOGY",
    "TTA_MODES",
    "EvalConfig",
    "PredictConfig",
    "SegmentationCounts",
    "Segmenter",
    "SegmenterMeta",
    "ThresholdSweep",
    "apply_threshold",
    "blend_weights",
    "evaluate_segmenter",
    "infer_probs",
    "load_segmenter",
    "log_segmenter",
    "morphology",
    "patch_detection_metrics",
    "predict_batch",
    "predict_probs",
    "predict_scene",
    "read_inputs",
    "save_overlay",
    "save_pr_curve",
    "save_segmenter_files",
    "segmentation_metrics",
    "sweep_thresholds",
    "tile_starts",
    "write_outputs",
]
