"""Choices and constants of the training flags (optimisers, schedules, protocols), declared once here so that
:mod:`imagery.training.config` reads them without importing the modules that implement them (no import circle:
those modules take a ``TrainConfig``)."""

from __future__ import annotations

from typing import Literal, get_args

Optimizer = Literal["sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam"]
Schedule = Literal["step", "cosine", "constant"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)

#: Epoch boundaries (0-based, first epoch of each step) and learning-rate multipliers of the seed's
#: 65-epoch step schedule (spec section 9: 1e-4, 5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6, 5e-7, 1e-7).
STEP_BOUNDARIES: tuple[int, ...] = (8, 15, 20, 25, 30, 35, 42, 50)
STEP_FACTORS: tuple[float, ...] = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001)
SPEC_EPOCHS = 65
#: The seed switches augmentation off for its last 4 of 65 epochs (epochs 61-64).
SPEC_AUGMENT_OFF_EPOCHS = 4

Protocol = Literal["honest", "study"]
FoldsOrder = Literal["shuffled", "natural"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
FOLDS_ORDERS: tuple[str, ...] = get_args(FoldsOrder)
