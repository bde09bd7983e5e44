"""``LandslideClassifier``: a native LightGBM Booster with a scikit-learn-style interface.

Input tables are matched to the training columns *by name* (extra columns are ignored, order does
not matter); missing columns are a :class:`common.cli.UserError` naming them. Categorical columns are
encoded with the levels seen in training (level ``i`` -> integer code ``i``, given to LightGBM as a
categorical feature). At predict time a level never seen in training, like a missing value, is
encoded as *missing* (NaN: LightGBM sends it down each split's default branch); the count of such
values per column is kept in ``last_unseen_counts_`` and reported with a ``UserWarning``.

Probabilities are P(landslide) in [0, 1]; SHAP contributions are in log-odds (raw score) units.

scikit-learn conventions: ``__init__`` stores its arguments unchanged; ``fit`` creates every learned
attribute (names ending in ``_``); a method called before ``fit`` raises
``sklearn.exceptions.NotFittedError``; the decision threshold is set with :meth:`set_threshold`.

Optional compiled prediction (:meth:`LandslideClassifier.compile`, :mod:`tabular.compiled`): the
trees as native code, with the same column matching and encoding, equal to ``Booster.predict`` to
floating-point rounding. ``contributions`` / ``explain`` always use the Booster.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split

from common.cli import UserError
from tabular.calibration import correct_prior
from tabular.config import LGBMParams
from tabular.data import infer_categorical
from tabular.spatial import inner_block_split

METADATA_VERSION = 1


def _category_kind(series: pd.Series) -> str:
    """``"numeric"`` when every value of a categorical column is a number (integer-coded levels), else ``"text"``."""
    if pd.api.types.is_bool_dtype(series):
        return "text"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    values = series.dropna()
    return "numeric" if len(values) and pd.to_numeric(values, errors="coerce").notna().all() else "text"


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

    Parameters (stored unchanged): ``params`` (:class:`tabular.config.LGBMParams`; ``None`` = defaults),
    ``seed``, ``categorical`` (categorical column names; ``None`` = inferred from the dtypes),
    ``target`` and ``positive_label`` (what the 1 class means), ``id_column`` (the column naming each
    row: never a feature, recorded with the model so predictions carry it).

    Learned in :meth:`fit`: ``params_`` (the parameters used), ``booster_`` (lightgbm.Booster),
    ``feature_names_`` (training column order), ``categorical_levels_`` ({column: [level, ...]}),
    ``categorical_kinds_`` (numeric- or text-coded levels), ``best_iteration_`` (rounds kept),
    ``scale_pos_weight_``, ``threshold_`` (decision threshold on
    P(landslide): 0.5 after ``fit``, set from out-of-fold predictions with :meth:`set_threshold`),
    ``last_unseen_counts_``; after :meth:`compile`, ``compiled_``.
    """

    def __init__(
        self,
        params: LGBMParams | None = None,
        *,
        seed: int = 42,
        categorical: Sequence[str] | None = None,
        target: str = "landslide",
        positive_label: str = "1",
        id_column: str | None = None,
    ) -> None:
        self.params = params
        self.seed = seed
        self.categorical = categorical
        self.target = target
        self.positive_label = positive_label
        self.id_column = id_column

    # ------------------------------------------------------------------ state
    def _check_fitted(self, attribute: str = "booster_") -> None:
        if getattr(self, attribute, None) is None:
            raise NotFittedError("this LandslideClassifier is not fitted yet; call fit() or load a logged model")

    def _learn_schema(self, X: pd.DataFrame) -> None:
        self.feature_names_ = [str(c) for c in X.columns]
        cats = infer_categorical(X) if self.categorical is None else list(self.categorical)
        self.categorical_levels_ = {col: sorted(level_strings(X[col]).dropna().unique().tolist()) for col in cats}
        self.categorical_kinds_ = {col: _category_kind(X[col]) for col in cats}

    def _category_codes(self, col: str, s: pd.Series) -> tuple[np.ndarray, int]:
        """Level codes (NaN for missing or unseen) of categorical column ``col`` and the unseen count.

        A column coded by numbers in training is cast to numbers first, so ``"3.0"`` or ``3.0`` finds
        level ``"3"`` whatever dtype the table arrives in. A column whose every value is unseen is an
        error (it would silently score every row as "missing").
        """
        if self.categorical_kinds_.get(col) == "numeric" and not pd.api.types.is_numeric_dtype(s):
            num = pd.to_numeric(s, errors="coerce")
            s = num.where(num.notna(), s)
        strs = level_strings(s)
        levels = self.categorical_levels_[col]
        codes = strs.map({lv: float(i) for i, lv in enumerate(levels)}).astype(float)
        given = strs.notna()
        n_unseen = int((given & codes.isna()).sum())
        if n_unseen and n_unseen == int(given.sum()):
            examples = sorted(strs[given].astype(str).unique().tolist())[:5]
            raise UserError(
                f"categorical column {col!r}: none of its values {examples} was seen in training "
                f"(levels {levels[:10]}); expected the same coding as the training table"
            )
        return codes.to_numpy(dtype=float), n_unseen

    def set_threshold(self, threshold: float) -> LandslideClassifier:
        """Set the decision threshold on P(landslide) (``predict`` is ``p >= threshold``); returns ``self``."""
        self._check_fitted()
        t = float(threshold)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        self.threshold_ = t
        return self

    # ------------------------------------------------------------------ encoding
    def encode(self, X: pd.DataFrame, *, warn: bool = True) -> np.ndarray:
        """Features as a float64 matrix ``(n_rows, n_features)`` in ``feature_names_`` order.

        Raises ValueError for missing columns or non-numeric values in numeric columns.
        """
        self._check_fitted("feature_names_")
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame with columns {self.feature_names_}, got {type(X).__name__}")
        missing = [c for c in self.feature_names_ if c not in X.columns]
        if missing:
            raise UserError(
                f"input is missing feature columns {missing} (the model was trained on {self.feature_names_})"
            )
        if not self.categorical_levels_:
            sub = X[self.feature_names_]
            if sub.shape[1] == len(self.feature_names_) and all(dt == np.float64 for dt in sub.dtypes):
                # all-float64 numeric table: the frame's own C-ordered block when it has one (no copy;
                # returned read-only so the caller's table cannot be changed through it), else one copy
                block = np.ascontiguousarray(sub.to_numpy(dtype=np.float64))
                if len(sub.columns) and np.may_share_memory(block, sub.iloc[:, 0].to_numpy()):
                    block = block.view()
                    block.flags.writeable = False
                self.last_unseen_counts_ = {}
                return block
        out = np.empty((len(X), len(self.feature_names_)), dtype=np.float64)
        unseen: dict[str, int] = {}
        for j, col in enumerate(self.feature_names_):
            s = X[col]
            if isinstance(s, pd.DataFrame):
                raise UserError(f"input has duplicate column {col!r} (expected unique column names)")
            if col in self.categorical_levels_:
                out[:, j], n_unseen = self._category_codes(col, s)
                if n_unseen:
                    unseen[col] = n_unseen
            else:
                if s.dtype == np.float64:  # no copy (na_value= would copy the column first; NaN stays NaN)
                    out[:, j] = s.to_numpy()
                    continue
                if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                    out[:, j] = s.to_numpy(dtype=float, na_value=np.nan)
                    continue
                num = pd.to_numeric(s, errors="coerce")
                bad = s.notna() & num.isna()
                if bad.any():
                    first = s[bad].iloc[0]
                    raise UserError(
                        f"column {col!r} has non-numeric value {first!r} "
                        f"({int(bad.sum())} such values; expected numbers)"
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
            params={"max_bin": self.params_.max_bin, "verbosity": -1},
        )

    # ------------------------------------------------------------------ training
    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray | pd.Series,
        *,
        num_boost_round: int | None = None,
        groups: np.ndarray | None = None,
    ) -> LandslideClassifier:
        """Train on ``X`` (rows x features) and ``y`` (0/1).

        With ``num_boost_round`` None and ``params.early_stopping_rounds > 0`` a stratified
        ``params.valid_fraction`` of the rows is held out and training stops when its ROC-AUC
        (rank-based, so unaffected by the class weight) has not improved for that many rounds
        (``best_iteration_`` = the best round). With ``groups`` (one id per row, e.g. spatial blocks)
        the held-out rows are whole groups (:func:`tabular.spatial.inner_block_split`). Otherwise
        exactly ``num_boost_round`` (or ``params.num_boost_round``) rounds are trained on all rows.
        """
        y_arr = np.asarray(y).astype(np.int64)
        if len(y_arr) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y_arr)} (expected the same number)")
        if set(np.unique(y_arr)) != {0, 1}:
            raise UserError(f"y must contain both classes 0 and 1, got {sorted(set(np.unique(y_arr).tolist()))}")
        self.params_ = self.params if self.params is not None else LGBMParams()
        self._learn_schema(X)
        Xe = self.encode(X, warn=False)
        n_pos = int(y_arr.sum())
        n_neg = len(y_arr) - n_pos
        self.scale_pos_weight_ = n_neg / n_pos if self.params_.class_balance == "scale_pos_weight" else 1.0
        booster_params = self.params_.booster_params(self.seed, n_rows=len(y_arr))
        booster_params["scale_pos_weight"] = self.scale_pos_weight_
        if num_boost_round is None and self.params_.early_stopping_rounds > 0:
            idx = np.arange(len(y_arr))
            if groups is not None:
                tr, va = inner_block_split(idx, np.asarray(groups), y_arr, self.params_.valid_fraction, self.seed)
            else:
                tr, va = train_test_split(
                    idx, test_size=self.params_.valid_fraction, stratify=y_arr, random_state=self.seed
                )
            dtrain = self._dataset(Xe[tr], y_arr[tr])
            dvalid = self._dataset(Xe[va], y_arr[va], reference=dtrain)
            booster = lgb.train(
                booster_params,
                dtrain,
                num_boost_round=self.params_.num_boost_round,
                valid_sets=[dvalid],
                valid_names=["valid"],
                callbacks=[
                    lgb.early_stopping(self.params_.early_stopping_rounds, first_metric_only=True, verbose=False)
                ],
            )
            self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        else:
            rounds = int(num_boost_round or self.params_.num_boost_round)
            booster = lgb.train(booster_params, self._dataset(Xe, y_arr), num_boost_round=rounds)
            self.best_iteration_ = rounds
        self.booster_ = booster
        self.threshold_ = 0.5
        self._prior_odds_factor = 1.0
        self.compiled_: Any | None = None
        self._compiled_for: tuple[lgb.Booster, int] | None = None
        return self

    # ------------------------------------------------------------------ inference
    def _booster(self) -> lgb.Booster:
        self._check_fitted()
        return self.booster_

    def compile(
        self, cache_dir: str | os.PathLike[str] | None = None, *, num_threads: int | None = None
    ) -> LandslideClassifier:
        """Compile the trees to native code with lleaves (:mod:`tabular.compiled`); ``predict_proba`` then uses it.

        Opt-in: compiling costs seconds (roughly proportional to the number of trees). The compiled
        forest holds exactly the trees ``Booster.predict(num_iteration=best_iteration_)`` uses.
        ``cache_dir``: folder reusing compiled object code (read the security note in
        :mod:`tabular.compiled`). ``num_threads``: prediction threads (None: ``params_.threads_for(n_rows)``,
        i.e. 1 below 100k rows, all cores above). Returns ``self``.
        """
        from tabular.compiled import compile_forest  # noqa: PLC0415 - lleaves/LLVM load only when compiling

        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        booster = self._booster()
        self.compiled_ = compile_forest(booster, self.best_iteration_, len(self.feature_names_), cache_dir)
        self.compiled_threads_ = num_threads
        self._compiled_for = (booster, self.best_iteration_)
        return self

    @property
    def is_compiled(self) -> bool:
        """True when ``predict_proba`` uses the compiled (lleaves) forest."""
        return getattr(self, "compiled_", None) is not None

    def _predict_positive(self, Xe: np.ndarray) -> np.ndarray:
        """P(landslide) for an encoded matrix, compiled when available, else ``Booster.predict``."""
        n = len(Xe)
        if self.is_compiled:
            done = self._compiled_for
            if done is None or done[0] is not self.booster_ or done[1] != self.best_iteration_:
                raise ValueError(
                    "the compiled model is stale (booster or best_iteration_ changed); call compile() again"
                )
            if n == 0:
                return np.empty(0, dtype=np.float64)
            threads = self.compiled_threads_ or self.params_.threads_for(n)
            p = np.asarray(self.compiled_.predict(np.ascontiguousarray(Xe, dtype=np.float64), n_jobs=threads))
        else:
            p = self._booster().predict(
                Xe, num_iteration=self.best_iteration_ or None, num_threads=self.params_.threads_for(n)
            )
        return correct_prior(p, self.prior_odds_factor_)

    @property
    def prior_odds_factor_(self) -> float:
        """Odds factor applied to every probability (:mod:`tabular.calibration`; 1.0: none)."""
        return float(getattr(self, "_prior_odds_factor", 1.0))

    def set_prior_correction(self, factor: float) -> LandslideClassifier:
        """Scale the odds of every predicted probability by ``factor`` (:func:`tabular.calibration.correct_prior`).

        Use ``negative_rate / scale_pos_weight`` after negative subsampling or class weighting so that
        probabilities refer to the population; returns ``self``.
        """
        if not factor > 0:
            raise ValueError(f"prior odds factor must be > 0, got {factor}")
        self._prior_odds_factor = float(factor)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """``(n_rows, 2)`` array: P(no landslide), P(landslide) (compiled forest after :meth:`compile`)."""
        p = self._predict_positive(self.encode(X))
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
                num_threads=self.params_.threads_for(len(X)),
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
        self._check_fitted()
        return {
            "metadata_version": METADATA_VERSION,
            "threshold": self.threshold_,
            "feature_names": self.feature_names_,
            "categorical_levels": self.categorical_levels_,
            "best_iteration": self.best_iteration_,
            "scale_pos_weight": self.scale_pos_weight_,
            "target": self.target,
            "positive_label": self.positive_label,
            "id_column": self.id_column,
            "categorical_kinds": self.categorical_kinds_,
            "unseen_category_policy": "missing",
            "seed": self.seed,
            "prior_odds_factor": self.prior_odds_factor_,
            "model_digest": self.model_digest(),
        }

    def model_digest(self) -> str:
        """sha256 of the Booster's model text: identifies this exact model (the fuser checks it)."""
        return hashlib.sha256(self._booster().model_to_string().encode("utf-8")).hexdigest()

    @classmethod
    def from_booster(
        cls, booster: lgb.Booster, metadata: dict[str, Any], params: LGBMParams | None = None
    ) -> LandslideClassifier:
        """Rebuild a fitted classifier from a native Booster and :meth:`metadata`; ``UserError`` on mismatches."""
        try:
            names = [str(c) for c in metadata["feature_names"]]
            levels = {str(k): [str(x) for x in v] for k, v in metadata["categorical_levels"].items()}
            clf = cls(
                params,
                seed=int(metadata.get("seed", 42)),
                categorical=list(levels),
                target=str(metadata.get("target", "landslide")),
                positive_label=str(metadata.get("positive_label", "1")),
                id_column=metadata.get("id_column"),
            )
            kinds = {str(k): str(v) for k, v in (metadata.get("categorical_kinds") or {}).items()}
            threshold = float(metadata["threshold"])
            best_iteration = int(metadata.get("best_iteration", 0))
            scale_pos_weight = float(metadata.get("scale_pos_weight", 1.0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"model metadata is incomplete: missing or bad field {exc}") from None
        if list(booster.feature_name()) != names:
            raise UserError(f"model metadata feature names {names} do not match the Booster's {booster.feature_name()}")
        clf.params_ = params if params is not None else LGBMParams()
        clf.booster_ = booster
        clf.feature_names_ = names
        clf.categorical_levels_ = levels
        clf.categorical_kinds_ = {col: kinds.get(col, "text") for col in levels}
        clf.best_iteration_ = best_iteration
        clf.scale_pos_weight_ = scale_pos_weight
        clf.threshold_ = threshold
        clf._prior_odds_factor = float(metadata.get("prior_odds_factor", 1.0))
        clf.compiled_ = None
        clf._compiled_for = None
        return clf
