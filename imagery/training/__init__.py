"""Training RAU-Net segmenters: configuration, losses, optimisers, the loop and the experiment protocol."""

from typing import TYPE_CHECKING

from common.lazy import lazy_getattr

if TYPE_CHECKING:
    from imagery.training.config import AugmentConfig, DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig
    from imagery.training.experiment import FoldResult, FoldsResult, run_folds, train_fold
    from imagery.training.losses import LOSSES, MIXTURE_LOSSES, build_criterion, create_loss, list_losses
    from imagery.training.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
    from imagery.training.trainer import Trainer, TrainResult

# name -> module: imported on first use (PEP 562), so importing one submodule stays cheap
_LAZY = {
    "AugmentConfig": "imagery.training.config",
    "DataConfig": "imagery.training.config",
    "LossConfig": "imagery.training.config",
    "ModelConfig": "imagery.training.config",
    "OptimConfig": "imagery.training.config",
    "TrainConfig": "imagery.training.config",
    "FoldResult": "imagery.training.experiment",
    "FoldsResult": "imagery.training.experiment",
    "run_folds": "imagery.training.experiment",
    "train_fold": "imagery.training.experiment",
    "LOSSES": "imagery.training.losses",
    "MIXTURE_LOSSES": "imagery.training.losses",
    "build_criterion": "imagery.training.losses",
    "create_loss": "imagery.training.losses",
    "list_losses": "imagery.training.losses",
    "OPTIMIZERS": "imagery.training.optim",
    "SCHEDULES": "imagery.training.optim",
    "build_optimizer": "imagery.training.optim",
    "build_scheduler": "imagery.training.optim",
    "Trainer": "imagery.training.trainer",
    "TrainResult": "imagery.training.trainer",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


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
