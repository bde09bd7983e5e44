"""Choices of the fusion flags that ``--help`` shows, declared without importing scikit-learn or MLflow.

``Calibration``: how :class:`fusion.stacking.StackingFuser` calibrates its meta-model's probabilities.
"""

from __future__ import annotations

from typing import Literal, get_args

Calibration = Literal["none", "sigmoid", "isotonic"]
CALIBRATIONS: tuple[str, ...] = get_args(Calibration)
