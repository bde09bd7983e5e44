"""Typed configuration of segmenter evaluation and prediction (``pipelines.evaluate_imagery``,
``pipelines.predict_imagery``); logged whole to MLflow."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    """``python -m pipelines.evaluate_imagery``: a logged model evaluated on a labelled split.

    ``tta``/``vote``/``morphology``/``threshold`` of ``None`` mean: use what is stored with the model.
    """

    model_uri: str = ""
    data: str = ""
    split: str = "test"
    layout: str | None = None
    tta: str | None = None
    vote: bool | None = None
    morphology: str | None = None
    threshold: float | None = None
    batch_size: int = 16
    device: str = "auto"
    runtime: str = "torch"
    seed: int = 42


@dataclass
class PredictConfig:
    """``python -m pipelines.predict_imagery``: masks, probability maps and overlays for patches or a scene.

    A scene (H, W, 14) larger than ``tile`` is cut into ``tile`` x ``tile`` tiles overlapping by
    ``overlap`` pixels and stitched with weights that fall off towards each tile's border.
    """

    model_uri: str = ""
    input: str = ""
    out: str = ""
    tta: str | None = None
    vote: bool | None = None
    morphology: str | None = None
    threshold: float | None = None
    batch_size: int = 16
    tile: int = 128
    overlap: int = 32
    overlays: bool = True
    device: str = "auto"
    runtime: str = "torch"
    seed: int = 42
