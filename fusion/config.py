"""Typed configuration of the fusion commands (``train_fusion``, ``score_regions``), logged whole to MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field

from fusion.scoring import ScoringConfig


@dataclass
class TrainFusionConfig:
    """What to fit: the two input runs, the meta-model's ``C`` (inverse L2), ``calibration``
    (none | sigmoid | isotonic), the fuser's own CV folds ``cv`` and ``allow_partial`` joins."""

    tabular_run: str
    imagery_run: str
    C: float = 1.0
    calibration: str = "none"
    cv: int = 5
    allow_partial: bool = False
    seed: int = 42
    experiment: str = "train_fusion"
    run_name: str | None = None
    tracking_uri: str | None = None


@dataclass
class ScoreRegionsConfig:
    """Inputs, models (URIs or paths; None = that model is not used), output and scoring options."""

    regions: str
    out: str
    images: str | None = None
    tabular_model: str | None = None
    imagery_model: str | None = None
    fusion_model: str | None = None
    masks_dir: str | None = None
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    resume: bool = False
    progress: bool = True
    device: str = "cpu"
    runtime: str = "auto"
    seed: int = 42
    experiment: str = "score_regions"
    run_name: str | None = None
    tracking_uri: str | None = None
