"""Optimisers, learning-rate schedules and the augmentation switch-off of the seed's recipe.

Optimisers (:data:`OPTIMIZERS`): ``sgd``, ``adagrad``, ``rmsprop``, ``adam`` (default; eps 1e-7 as in
Keras), ``adamw``, ``nadam``. Schedules (:data:`SCHEDULES`, applied per optimisation step):

* ``step``: the seed's 65-epoch step schedule, learning rate ``lr * STEP_FACTORS[j]`` from epoch
  ``STEP_BOUNDARIES[j-1]`` (1e-4, 5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6, 5e-7, 1e-7 for lr 1e-4), the
  boundaries scaled by ``epochs / 65`` when a run is shorter;
* ``cosine``: linear warm-up over ``warmup_epochs`` then a half cosine to 0;
* ``constant``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from common.cli import UserError
from imagery.training.choices import (  # noqa: F401 - re-exported: declared once in choices
    OPTIMIZERS,
    SCHEDULES,
    SPEC_AUGMENT_OFF_EPOCHS,
    SPEC_EPOCHS,
    STEP_BOUNDARIES,
    STEP_FACTORS,
    Optimizer,
    Schedule,
)
from imagery.training.config import TrainConfig

_FACTORIES: dict[str, Callable[[Any, Any], torch.optim.Optimizer]] = {
    "sgd": lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay),
    "adagrad": lambda params, o: torch.optim.Adagrad(params, lr=o.lr, eps=o.eps, weight_decay=o.weight_decay),
    "rmsprop": lambda params, o: torch.optim.RMSprop(
        params, lr=o.lr, eps=o.eps, momentum=0.0, weight_decay=o.weight_decay
    ),
    "adam": lambda params, o: torch.optim.Adam(params, lr=o.lr, eps=o.eps, weight_decay=o.weight_decay),
    "adamw": lambda params, o: torch.optim.AdamW(params, lr=o.lr, eps=o.eps, weight_decay=o.weight_decay or 1e-2),
    "nadam": lambda params, o: torch.optim.NAdam(params, lr=o.lr, eps=o.eps, weight_decay=o.weight_decay),
}


def build_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.optim.optimizer`` (Adam eps 1e-7 as in Keras by default)."""
    name = cfg.optim.optimizer
    if name not in _FACTORIES:
        raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    return _FACTORIES[name](params, cfg.optim)


def step_factor(epoch: float, epochs: int) -> float:
    """Multiplier of the seed's step schedule at (fractional) ``epoch``; boundaries scaled by ``epochs/65``
    when the run is shorter."""
    scale = min(1.0, epochs / SPEC_EPOCHS)
    factor = STEP_FACTORS[0]
    for boundary, f in zip(STEP_BOUNDARIES, STEP_FACTORS[1:], strict=True):
        if epoch >= boundary * scale:
            factor = f
    return factor


def cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from ``1/warmup_steps`` to 1, then a half cosine from 1 to 0 over the remaining steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    rest = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / rest)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` for ``cfg.optim.schedule`` (``step``, ``cosine`` or ``constant``)."""
    spe = max(1, steps_per_epoch)
    total = cfg.epochs * spe
    kind = cfg.optim.schedule
    if kind == "step":
        fn: Callable[[int], float] = lambda s: step_factor(s / spe, cfg.epochs)  # noqa: E731
    elif kind == "cosine":
        warm = int(round(cfg.optim.warmup_epochs * spe))
        fn = lambda s: cosine_factor(s, total, warm)  # noqa: E731
    elif kind == "constant":
        fn = lambda s: 1.0  # noqa: E731
    else:
        raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}; got {kind!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def augment_off_epochs(cfg: TrainConfig) -> int:
    """Final epochs without augmentation: ``cfg.augment.off_last_epochs`` scaled by ``epochs/65`` (floor)."""
    off = cfg.augment.off_last_epochs
    if cfg.epochs < SPEC_EPOCHS and off == SPEC_AUGMENT_OFF_EPOCHS:
        off = int(off * cfg.epochs / SPEC_EPOCHS)
    return max(0, min(off, cfg.epochs - 1))
