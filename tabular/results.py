"""The result types of the tabular commands, one module for every path (in memory, local, Dask).

:class:`TabularTrainResult` (a finished training run) and :class:`PredictTableResult` (a finished
prediction run) are what :func:`tabular.large.train` and :func:`tabular.large.predict` return.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from common.metrics import METRIC_NAMES


@dataclass(frozen=True)
class TabularTrainResult:
    """A finished training run: where the model is, its cross-validated scores and threshold."""

    run_id: str
    model_uri: str
    logged_model_uri: str
    summary: dict[str, float]
    threshold: float
    top_features: list[str]
    n_folds: int
    seconds: float

    @classmethod
    def of_run(
        cls,
        run_id: str,
        *,
        logged_model_uri: str,
        summary: dict[str, float],
        threshold: float,
        importance: pd.DataFrame,
        n_folds: int,
        seconds: float,
    ) -> TabularTrainResult:
        """The result of run ``run_id``; an empty ``summary`` (no cross-validation) reads as NaN scores."""
        if not summary:
            summary = {f"{m}_{s}": float("nan") for m in METRIC_NAMES for s in ("mean", "std")}
        return cls(
            run_id=run_id,
            model_uri=f"runs:/{run_id}/model",
            logged_model_uri=logged_model_uri,
            summary=summary,
            threshold=threshold,
            top_features=importance["feature"].head(5).tolist(),
            n_folds=n_folds,
            seconds=seconds,
        )


@dataclass(frozen=True)
class PredictTableResult:
    """A finished prediction run: the output file, row and positive counts, unseen category values."""

    run_id: str
    out: str
    rows: int
    positives: int
    threshold: float
    unseen: dict[str, int]
    compiled: bool
    maps: tuple[str, ...] = ()  # files written by --raster-out (probability COG, classes COG, PNG)
    warnings: tuple[str, ...] = ()  # accepted-with-a-warning conditions (e.g. a map from a sampled table)
