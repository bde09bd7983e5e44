"""Optuna search of the main LightGBM parameters, nested inside each cross-validation fold (``--tune N``).

For outer fold ``k`` the search only sees that fold's *training* rows: they are split once more by
whole blocks (or groups; :func:`tabular.spatial.inner_block_split`) into an inner training part and
an inner validation part, each of the ``N`` trials trains on the inner training part with early
stopping on the inner validation part and scores its ROC-AUC there, and the best trial's parameters
train the fold's model. The outer fold's rows are never used to choose parameters, so the reported
cross-validated score is not optimistic. The final model is tuned the same way on all rows.

Search space (Optuna's TPE sampler, seeded): ``num_leaves`` 7-255 (log), ``learning_rate``
0.01-0.3 (log), ``min_data_in_leaf`` 10-2000 (log), ``feature_fraction`` 0.5-1, ``bagging_fraction``
0.5-1, ``lambda_l2`` 1e-3-30 (log). Each trial is a nested MLflow run (``<fold>-trial<i>``) with its
parameters and ``inner_roc_auc``; the best parameters are logged on the parent run as
``tune.<fold>.<name>``.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import optuna

from common.tracking import tracked_run
from tabular.config import LGBMParams
from tabular.large.core import class_weight, inner_split, subset_rows, train_early_stopped


def search_space(trial: optuna.Trial) -> dict[str, Any]:
    """The parameters one trial tries (module docstring)."""
    return {
        "num_leaves": trial.suggest_int("num_leaves", 7, 255, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 2000, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
    }


def tune_params(
    ds: lgb.Dataset,
    positions: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    params: dict[str, Any],
    lg: LGBMParams,
    n_trials: int,
    weights: bool,
    seed: int,
    name: str,
) -> dict[str, Any]:
    """Best parameters for training on ``positions`` of the binned dataset ``ds`` (``params`` updated)."""
    tr, va = inner_split(positions, groups, labels, lg.valid_fraction, seed)
    w = class_weight(labels[tr]) if weights else 1.0
    patience = lg.early_stopping_rounds or 30

    def objective(trial: optuna.Trial) -> float:
        trial_params = search_space(trial)
        p = dict(params, scale_pos_weight=w, **trial_params)
        with tracked_run("tune", None, run_name=f"{name}-trial{trial.number}", nested=True, tags={"fold": name}):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                booster = train_early_stopped(
                    p, subset_rows(ds, tr), subset_rows(ds, va), rounds=lg.num_boost_round, patience=patience
                )
            auc = float(booster.best_score["valid"]["auc"])
            mlflow.log_params(trial_params)
            mlflow.log_metrics({"inner_roc_auc": auc, "best_iteration": float(booster.best_iteration or 0)})
        return auc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    mlflow.log_params({f"tune.{name}.{k}": v for k, v in study.best_params.items()})
    mlflow.log_metric(f"tune_{name}_inner_roc_auc", float(study.best_value))
    return dict(params, **study.best_params)
