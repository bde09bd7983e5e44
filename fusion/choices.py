"""Choices of the fusion flags that ``--help`` shows, declared without importing scikit-learn or MLflow.

``Calibration``: how :class:`fusion.stacking.StackingFuser` calibrates its meta-model's probabilities.
"""

from __future__ import annotations

from typing import Literal, get_args

Calibration = Literal["none", "sigmoid", "isotonic"]
CALIBRATIONS: tuple[str, ...] = get_args(Calibration)

#: Decision policies of :mod:`fusion.crosscheck` (documented there).
Policy = Literal["stacked", "tabular", "imagery", "any", "both", "weighted"]
POLICIES: tuple[str, ...] = get_args(Policy)
