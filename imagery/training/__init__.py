"""Training RAU-Net segmenters: configuration, losses, optimisers, the loop and the experiment protocol."""

from imagery.training.config import AugmentConfig, DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig
from imagery.training.experiment import FoldResult, FoldsResult, run_folds, train_fold
from imagery.training.losses import LOSSES, MIXTURE_LOSSES, build_criterion, create_loss, list_losses
from imagery.training.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from imagery.training.trainer import Trainer, TrainResult

__all__ = [
    "LOSSES",
    "MIXTURE_LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "AugmentConfig",
    "DataConfig",
    "FoldResult",
    "FoldsResult",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_criterion",
    "build_optimizer",
    "build_scheduler",
    "create_loss",
    "list_losses",
    "run_folds",
    "train_fold",
]
