"""Using a trained segmenter: pre/post-processing, metrics, evaluation, patch and scene prediction, serving.

Never imports :mod:`imagery.training`.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_getattr

if TYPE_CHECKING:
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

# name -> module: imported on first use (PEP 562), so importing one submodule stays cheap
_LAZY = {
    "EvalConfig": "imagery.inference.config",
    "PredictConfig": "imagery.inference.config",
    "evaluate_segmenter": "imagery.inference.evaluate",
    "save_pr_curve": "imagery.inference.evaluate",
    "SegmentationCounts": "imagery.inference.metrics",
    "patch_detection_metrics": "imagery.inference.metrics",
    "segmentation_metrics": "imagery.inference.metrics",
    "MORPHOLOGY": "imagery.inference.postprocess",
    "TTA_MODES": "imagery.inference.postprocess",
    "ThresholdSweep": "imagery.inference.postprocess",
    "apply_threshold": "imagery.inference.postprocess",
    "morphology": "imagery.inference.postprocess",
    "predict_probs": "imagery.inference.postprocess",
    "sweep_thresholds": "imagery.inference.postprocess",
    "blend_weights": "imagery.inference.predict",
    "predict_scene": "imagery.inference.predict",
    "read_inputs": "imagery.inference.predict",
    "save_overlay": "imagery.inference.predict",
    "tile_starts": "imagery.inference.predict",
    "write_outputs": "imagery.inference.predict",
    "Segmenter": "imagery.inference.segmenter",
    "SegmenterMeta": "imagery.inference.segmenter",
    "infer_probs": "imagery.inference.segmenter",
    "predict_batch": "imagery.inference.segmenter",
    "load_segmenter": "imagery.inference.serving",
    "log_segmenter": "imagery.inference.serving",
    "save_segmenter_files": "imagery.inference.serving",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


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
