"""Typed configuration for the tabular landslide classifier.

All fields have units or meanings stated; the dataclasses are logged whole to MLflow by
``common.tracking.tracked_run``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

SMALL_DATA_ROWS = 100_000


@dataclass
class LGBMParams:
    """LightGBM booster settings (passed to ``lightgbm.train``).

    ``learning_rate`` is the shrinkage per round; ``num_leaves`` the maximum leaves per tree;
    ``num_boost_round`` the maximum number of rounds (early stopping may stop sooner);
    ``early_stopping_rounds`` the patience on the inner validation split (0 disables early stopping);
    ``valid_fraction`` the share of each training fold held out for early stopping;
    ``class_balance``: ``"scale_pos_weight"`` weights positives by n_neg/n_pos, ``"none"`` leaves them.
    ``num_threads`` 0 means automatic: one thread below ``SMALL_DATA_ROWS`` rows (OpenMP start-up and
    barrier costs exceed the gain there, and on a shared 2-core machine a 2-thread team stalls
    whenever one core is busy: measured 14x slower on a 1k-row table), else all cores.
    """

    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.9
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_bin: int = 255
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
    valid_fraction: float = 0.15
    class_balance: Literal["scale_pos_weight", "none"] = "scale_pos_weight"
    num_threads: int = 0

    def threads_for(self, n_rows: int) -> int:
        """OpenMP threads for a job on ``n_rows`` rows (see ``num_threads``)."""
        if self.num_threads > 0:
            return self.num_threads
        return 1 if n_rows < SMALL_DATA_ROWS else (os.cpu_count() or 1)

    def booster_params(self, seed: int, n_rows: int = 0) -> dict[str, object]:
        """The dict handed to ``lightgbm.train`` (without the class weight, set in ``fit``)."""
        return {
            "objective": "binary",
            "metric": ["auc", "binary_logloss"],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            "num_threads": self.threads_for(n_rows),
            "seed": seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }


CVMode = Literal["auto", "stratified", "group", "spatial"]
Imbalance = Literal["weights", "subsample", "none"]
Engine = Literal["local", "dask"]
DEFAULT_BLOCK_SIZE_M = 1000.0


@dataclass
class CVConfig:
    """Cross-validation: ``n_folds`` folds, stratified, grouped by a column, or spatial.

    ``mode``: ``"auto"`` is ``"group"`` with a group column, else ``"spatial"`` when the coordinate
    columns exist, else ``"stratified"``. ``"spatial"`` (:mod:`tabular.spatial`) folds whole square
    blocks of ``block_size_m`` metres; ``coords`` names the x, y columns (default ``x, y``, or the
    table's own; longitude/latitude degrees are mapped to metres). Coordinates are never features
    in spatial mode. ``n_folds`` 0 (large tables only) skips cross-validation.
    """

    n_folds: int = 5
    shuffle: bool = True
    mode: CVMode = "auto"
    block_size_m: float = DEFAULT_BLOCK_SIZE_M
    coords: list[str] | None = None


@dataclass
class ScaleConfig:
    """Options of the large-table path (a Parquet dataset folder or Arrow IPC input; :mod:`tabular.large`).

    ``engine``: ``"local"`` streams the table into LightGBM; ``"dask"`` trains with
    ``lightgbm.dask.DaskLGBMClassifier`` on ``scheduler`` (an address; None starts a local cluster of
    ``dask_workers`` processes). ``batch_rows``: rows per read batch. ``imbalance``: ``"none"``
    (default), ``"weights"`` (positives weighted n_neg/n_pos) or ``"subsample"`` (every positive and
    ``negatives_per_positive`` negatives per positive drawn at random, no weights); probabilities are
    prior-corrected either way (:mod:`tabular.calibration`). ``"none"`` is the default because full
    n_neg/n_pos weights hurt the ranking of a rare class: on a 300k-row Carinthia-like table (0.33 %
    positives) a held-out ROC-AUC of 0.62 with weights against 0.80 without, after 100 rounds.
    ``tune_trials``: Optuna trials per outer fold (0: off).
    ``shap_rows``: rows sampled for the SHAP summary. ``oof_max_rows``: the out-of-fold table is
    logged up to this many rows. ``bin_sample_rows``: rows LightGBM samples for its bin bounds.
    """

    engine: Engine = "local"
    scheduler: str | None = None
    dask_workers: int = 2
    batch_rows: int = 262_144
    imbalance: Imbalance = "none"
    negatives_per_positive: float = 10.0
    tune_trials: int = 0
    shap_rows: int = 2000
    oof_max_rows: int = 5_000_000
    bin_sample_rows: int = 200_000


@dataclass
class TrainTabularConfig:
    """Everything ``python -m pipelines.train_tabular`` was asked to do.

    ``data`` None means the built-in synthetic region table with ``n_regions`` rows.
    """

    data: str | None = None
    target: str = "landslide"
    positive: str | None = None
    drop: list[str] = field(default_factory=list)
    categorical: list[str] | None = None
    group: str | None = None
    id_column: str | None = None
    n_regions: int = 4000
    top_k: int = 3
    seed: int = 42
    experiment: str = "train_tabular"
    run_name: str | None = None
    tracking_uri: str | None = None
    cv: CVConfig = field(default_factory=CVConfig)
    lgbm: LGBMParams = field(default_factory=LGBMParams)
    scale: ScaleConfig = field(default_factory=ScaleConfig)


@dataclass
class PredictTabularConfig:
    """Everything ``python -m pipelines.predict_tabular`` was asked to do."""

    model: str
    data: str
    out: str
    top_k: int = 3
    id_column: str | None = None
    seed: int = 42
    experiment: str = "predict_tabular"
    run_name: str | None = None
    tracking_uri: str | None = None
    compiled: bool = False  # compile the trees to native code (lleaves) before predicting
    compile_cache: str | None = None  # folder reusing compiled object code across runs
    raster_out: str | None = None  # susceptibility GeoTIFF (large-table path; also classes GeoTIFF and PNG)
    grid: str | None = None  # reference raster for --raster-out when the table carries no grid
    class_breaks: list[float] | None = None  # probability breaks of the 5 classes (None: area quantiles)
    allow_sampled_map: bool = False  # --raster-out on a table that keeps only a sample of the cells (warns)
    engine: Engine = "local"
    scheduler: str | None = None
    batch_rows: int = 262_144
