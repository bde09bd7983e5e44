"""``LandslideClassifier``: a native LightGBM Booster with an sklearn-style interface.

Input tables are matched to the training columns *by name* (extra columns are ignored, order does
not matter); missing columns raise ValueError naming them. Categorical columns are encoded with the
levels seen in training (level ``i`` -> integer code ``i``, given to LightGBM as a categorical
feature). At predict time a level never seen in training, like a missing value, is encoded as
*missing* (NaN: LightGBM sends it down each split's default branch); the count of such values per
column is kept in ``last_unseen_counts_`` and reported with a ``UserWarning``.

Probabilities are P(landslide) in [0, 1]; SHAP contributions are in log-odds (raw score) units.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tabular.config import LGBMParams

METADATA_VERSION = 1


def level_strings(series: pd.Series) -> pd.Series:
    """Categorical values as strings (integral floats as ``'3'`` not ``'3.0'``); missing stays NaN."""
    out = series.astype(object)
    mask = series.notna()

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()

    return out.where(~mask, out[mask].map(fmt)) if mask.any() else out


class LandslideClassifier:
    """LightGBM binary classifier for region tables.

    Fitted attributes: ``booster_`` (lightgbm.Booster), ``feature_names_`` (training column order),
    ``categorical_levels_`` ({column: [level, ...]}), ``threshold_`` (decision threshold on
    P(landslide), 0.5 until set from out-of-fold predictions), ``best_iteration_`` (rounds kept),
    ``scale_pos_weight_``, ``target_`` and ``positive_label_`` (what the 1 class means).
    """

    def __init__(
        self,
        params: LGBMParams | None = None,
        *,
        seed: int = 42,
        categorical: Sequence[str] | None = None,
        threshold: float = 0.5,
        target: str = "landslide",
        positive_label: str = "1",
    ) -> None:
        self.params = params or LGBMParams()
        self.seed = seed
        self.categorical = list(categorical) if categorical is not None else None
        self.threshold_ = float(threshold)
        self.target_ = target
        self.positive_label_ = positive_label
        self.booster_: lgb.Booster | None = None
        self.feature_names_: list[str] = []
        self.categorical_levels_: dict[str, list[str]] = {}
        self.best_iteration_: int = 0
        self.scale_pos_weight_: float = 1.0
        self.last_unseen_counts_: dict[str, int] = {}

    # ------------------------------------------------------------------ encoding
    def _learn_schema(self, X: pd.DataFrame) -> None:
        self.feature_names_ = [str(c) for c in X.columns]
        if self.categorical is None:
            from tabular.data import infer_categorical

            cats = infer_categorical(X)
        else:
            cats = list(self.categorical)
        levels: dict[str, list[str]] = {}
        for col in cats:
            vals = level_strings(X[col]).dropna().unique().tolist()
            levels[col] = sorted(vals)
        self.categorical_levels_ = levels

    def encode(self, X: pd.DataFrame, *, warn: bool = True) -> np.ndarray:
        """Features as a float64 matrix ``(n_rows, n_features)`` in ``feature_names_`` order.

        Raises ValueError for missing columns or non-numeric values in numeric columns.
        """
        if not self.feature_names_:
            raise ValueError("model is not fitted (no feature names)")
        if not isinstance(X, pd.DataFrame):
            raise ValueError(f"expected a pandas DataFrame with columns {self.feature_names_}, got {type(X).__name__}")
        missing = [c for c in self.feature_names_ if c not in X.columns]
        if missing:
            raise ValueError(f"input is missing feature columns {missing} (the model was trained on {self.feature_names_})")
        out = np.empty((len(X), len(self.feature_names_)), dtype=np.float64)
        unseen: dict[str, int] = {}
        for j, col in enumerate(self.feature_names_):
            s = X[col]
            if isinstance(s, pd.DataFrame):
                raise ValueError(f"input has duplicate column {col!r} (expected unique column names)")
            if col in self.categorical_levels_:
                levels = self.categorical_levels_[col]
                strs = level_strings(s)
                codes = strs.map({lv: float(i) for i, lv in enumerate(levels)}).astype(float)
                n_unseen = int((strs.notna() & codes.isna()).sum())
                if n_unseen:
                    unseen[col] = n_unseen
                out[:, j] = codes.to_numpy(dtype=float)
            else:
                if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                    out[:, j] = s.to_numpy(dtype=float, na_value=np.nan)
                    continue
                num = pd.to_numeric(s, errors="coerce")
                bad = s.notna() & num.isna()
                if bad.any():
                    first = s[bad].iloc[0]
                    raise ValueError(
                        f"column {col!r} has non-numeric value {first!r} ({int(bad.sum())} such values; expected numbers)"
                    )
                out[:, j] = num.to_numpy(dtype=float)
        self.last_unseen_counts_ = unseen
        if unseen and warn:
            warnings.warn(
                f"categorical levels not seen in training were treated as missing: {unseen}", UserWarning, stacklevel=2
            )
        return out

    def _dataset(self, X: np.ndarray, y: np.ndarray | None = None, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        cat_idx = [j for j, c in enumerate(self.feature_names_) if c in self.categorical_levels_]
        return lgb.Dataset(
            X,
            label=y,
            feature_name=self.feature_names_,
            categorical_feature=cat_idx,
            reference=reference,
            free_raw_data=True,
            params={"max_bin": self.params.max_bin, "verbosity": -1},
        )

    # ------------------------------------------------------------------ training
    def fit(self, X: pd.DataFrame, y: np.ndarray | pd.Series, *, num_boost_round: int | None = None) -> LandslideClassifier:
        """Train on ``X`` (rows x features) and ``y`` (0/1).

        With ``num_boost_round`` None and ``params.early_stopping_rounds > 0`` a stratified
        ``params.valid_fraction`` of the rows is held out and training stops when its log-loss
        ROC-AUC (rank-based, so unaffected by the class weight) has not improved for that many rounds (``best_iteration_`` = the best round). Otherwise
        exactly ``num_boost_round`` (or ``params.num_boost_round``) rounds are trained on all rows.
        """
        y_arr = np.asarray(y).astype(np.int64)
        if len(y_arr) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y_arr)} (expected the same number)")
        if set(np.unique(y_arr)) != {0, 1}:
            raise ValueError(f"y must contain both classes 0 and 1, got {sorted(set(np.unique(y_arr).tolist()))}")
        self._learn_schema(X)
        Xe = self.encode(X, warn=False)
        n_pos = int(y_arr.sum())
        n_neg = len(y_arr) - n_pos
        self.scale_pos_weight_ = n_neg / n_pos if self.params.class_balance == "scale_pos_weight" else 1.0
        booster_params = self.params.booster_params(self.seed, n_rows=len(y_arr))
        booster_params["scale_pos_weight"] = self.scale_pos_weight_
        early = num_boost_round is None and self.params.early_stopping_rounds > 0
        if early:
            idx = np.arange(len(y_arr))
            tr, va = train_test_split(idx, test_size=self.params.valid_fraction, stratify=y_arr, random_state=self.seed)
            dtrain = self._dataset(Xe[tr], y_arr[tr])
            dvalid = self._dataset(Xe[va], y_arr[va], reference=dtrain)
            booster = lgb.train(
                booster_params,
                dtrain,
                num_boost_round=self.params.num_boost_round,
                valid_sets=[dvalid],
                valid_names=["valid"],
                callbacks=[lgb.early_stopping(self.params.early_stopping_rounds, first_metric_only=True, verbose=False)],
            )
            self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        else:
            rounds = int(num_boost_round or self.params.num_boost_round)
            booster = lgb.train(booster_params, self._dataset(Xe, y_arr), num_boost_round=rounds)
            self.best_iteration_ = rounds
        self.booster_ = booster
        return self

    # ------------------------------------------------------------------ inference
    def _booster(self) -> lgb.Booster:
        if self.booster_ is None:
            raise ValueError("model is not fitted")
        return self.booster_

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """``(n_rows, 2)`` array: P(no landslide), P(landslide)."""
        p = self._booster().predict(
            self.encode(X), num_iteration=self.best_iteration_ or None, num_threads=self.params.threads_for(len(X))
        )
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """0/1 labels: P(landslide) >= ``threshold_``."""
        return (self.predict_proba(X)[:, 1] >= self.threshold_).astype(np.int64)

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """SHAP values from LightGBM's TreeSHAP (``pred_contrib=True``): ``(n_rows, n_features + 1)``
        in log-odds; the last column is the expected value (bias)."""
        return np.asarray(
            self._booster().predict(
                self.encode(X),
                num_iteration=self.best_iteration_ or None,
                pred_contrib=True,
                num_threads=self.params.threads_for(len(X)),
            )
        )

    def explain(self, X: pd.DataFrame, top_k: int = 3) -> pd.DataFrame:
        """Per-row top-``top_k`` reasons, strongest |SHAP| first.

        Columns ``reason_{i}_feature``, ``reason_{i}_value`` (the input value as given) and
        ``reason_{i}_shap`` (signed contribution in log-odds; > 0 pushes towards landslide), i = 1..k.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        contrib = self.contributions(X)[:, :-1]
        k = min(top_k, contrib.shape[1])
        order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
        names = np.asarray(self.feature_names_, dtype=object)
        raw = X[self.feature_names_].to_numpy(dtype=object)
        rows = np.arange(len(X))[:, None]
        out: dict[str, Any] = {}
        for i in range(k):
            out[f"reason_{i + 1}_feature"] = names[order[:, i]]
            out[f"reason_{i + 1}_value"] = raw[rows[:, 0], order[:, i]]
            out[f"reason_{i + 1}_shap"] = contrib[rows[:, 0], order[:, i]]
        return pd.DataFrame(out, index=X.index)

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        """JSON-able description that, with the native Booster text, rebuilds the classifier."""
        return {
            "metadata_version": METADATA_VERSION,
            "threshold": self.threshold_,
            "feature_names": self.feature_names_,
            "categorical_levels": self.categorical_levels_,
            "best_iteration": self.best_iteration_,
            "scale_pos_weight": self.scale_pos_weight_,
            "target": self.target_,
            "positive_label": self.positive_label_,
            "unseen_category_policy": "missing",
            "seed": self.seed,
        }

    @classmethod
    def from_booster(cls, booster: lgb.Booster, metadata: dict[str, Any]) -> LandslideClassifier:
        """Rebuild from a native Booster and :meth:`metadata`; raises ValueError on mismatches."""
        try:
            names = [str(c) for c in metadata["feature_names"]]
            clf = cls(
                seed=int(metadata.get("seed", 42)),
                categorical=list(metadata["categorical_levels"]),
                threshold=float(metadata["threshold"]),
                target=str(metadata.get("target", "landslide")),
                positive_label=str(metadata.get("positive_label", "1")),
            )
            clf.categorical_levels_ = {str(k): [str(x) for x in v] for k, v in metadata["categorical_levels"].items()}
            clf.best_iteration_ = int(metadata.get("best_iteration", 0))
            clf.scale_pos_weight_ = float(metadata.get("scale_pos_weight", 1.0))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"model metadata is incomplete: missing or bad field {exc}") from None
        if list(booster.feature_name()) != names:
            raise ValueError(f"model metadata feature names {names} do not match the Booster's {booster.feature_name()}")
        clf.feature_names_ = names
        clf.booster_ = booster
        return clf
