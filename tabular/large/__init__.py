"""Cell tables too large for pandas (Parquet datasets, Arrow IPC), layered like LightGBM's python package.

Each layer imports only the layers above it:

1. :mod:`tabular.large.source`: the source and encoder (``TableSource`` reads column-selected batches of
   a dataset folder or IPC file and checks its parts; ``TableMeta`` the grid, target and sampling in the
   schema metadata; ``FeatureEncoder`` float32 with level codes; ``TableSequence`` for LightGBM;
   ``atomic_dataset_dir`` writes a dataset folder).
2. :mod:`tabular.large.plan`: the plan (columns, labels with the one target contract, folds, sampling).
3. :mod:`tabular.large.core`: the binned core (LightGBM on row subsets of one binned matrix, the inner
   split, the class weight, early stopping and its emulation).
4. :mod:`tabular.large.report`: the report (CV logging, the end of training: model, SHAP).
5. The engines on top: :mod:`tabular.large.local` (streamed in this process; also scoring and the
   susceptibility map), :mod:`tabular.large.dask_engine` (a Dask cluster) and the tuner
   :mod:`tabular.large.tuning` (Optuna nested in the folds, calling the core).

:func:`train` and :func:`predict` choose the path for a config (the in-memory path of
:mod:`tabular.experiment` for a CSV/Parquet file, the local engine for a dataset, the Dask engine on
``engine="dask"``), so each command calls one function. Result types: :mod:`tabular.results`.
Engines load on demand (Dask, Optuna and rasterio only when used).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from common.cli import UserError

if TYPE_CHECKING:
    from tabular.config import PredictTabularConfig, TrainTabularConfig
    from tabular.results import PredictTableResult, TabularTrainResult


def train(cfg: TrainTabularConfig, log: Callable[[str], None] = print) -> TabularTrainResult:
    """Train as ``cfg`` says inside the active MLflow run: Dask, the local streamed engine or in memory."""
    from tabular.large.source import is_dataset_path  # noqa: PLC0415 - engines load on demand

    if cfg.scale.engine == "dask":
        from tabular.large.dask_engine import train_dask_model  # noqa: PLC0415 - dask loads only for dask

        return train_dask_model(cfg, log=log)
    if cfg.data is not None and (is_dataset_path(cfg.data) or cfg.scale.tune_trials > 0):
        from tabular.large.local import train_dataset_model  # noqa: PLC0415 - see above

        return train_dataset_model(cfg, log=log)
    if cfg.scale.imbalance != "none":
        raise UserError(
            f"--imbalance {cfg.scale.imbalance} applies to large tables (a Parquet dataset folder or Arrow IPC "
            "file); use --class-balance for a CSV/Parquet file"
        )
    from tabular.experiment import train_tabular_model  # noqa: PLC0415 - see above

    return train_tabular_model(cfg, log=log)


def predict(cfg: PredictTabularConfig, *, tracking_uri: str | None = None) -> PredictTableResult:
    """Score as ``cfg`` says inside the active MLflow run: Dask, the local streamed engine or in memory."""
    from tabular.large.source import is_dataset_path  # noqa: PLC0415 - engines load on demand

    if cfg.engine == "dask":
        from tabular.large.dask_engine import predict_dask  # noqa: PLC0415 - dask loads only for dask

        return predict_dask(cfg, tracking_uri=tracking_uri)
    if is_dataset_path(cfg.data) or cfg.raster_out:
        from tabular.large.local import predict_dataset  # noqa: PLC0415 - see above

        return predict_dataset(cfg, tracking_uri=tracking_uri)
    from tabular.experiment import predict_table  # noqa: PLC0415 - see above

    return predict_table(cfg, tracking_uri=tracking_uri)
