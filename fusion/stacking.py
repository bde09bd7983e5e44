"""Stacking meta-model over the two base models' probabilities, fitted on out-of-fold predictions only.

:class:`StackingFuser` is a scikit-learn estimator. Its input ``X`` has two columns, ``p_tabular``
and ``p_imagery`` (probabilities in [0, 1]; NaN = modality missing for that region), and the
default meta-model is a logistic regression on ``(logit p_tabular, logit p_imagery)``.
A logistic regression on logits is itself a calibration map (Platt scaling in two dimensions), so
its probabilities are calibrated on the data it was fitted on; ``calibration="sigmoid"`` or
``"isotonic"`` adds scikit-learn's :class:`~sklearn.calibration.CalibratedClassifierCV`
(``ensemble=False``: cross-validated decision values, one calibrator) on top.

Missing modality: instead of indicator columns (which learn nothing when every out-of-fold row
has both modalities), the fuser fits two calibrated single-modality sub-models beside the main one,
``tabular_only`` on ``logit p_tabular`` and ``imagery_only`` on ``logit p_imagery``, on the same
out-of-fold rows. A region with one modality is scored by the sub-model of the modality it has.

Out-of-fold only: :meth:`StackingFuser.fit_oof` joins the ``oof_predictions.csv`` tables of a
tabular run and an imagery run (``region_id, y_true, p_oof, fold``) by ``region_id`` and refuses
ids present in only one (naming them) or labels that disagree. The decision threshold is chosen
to maximise F1 on the fuser's *own* cross-validated predictions (``cv`` folds), and the Brier
score/ROC-AUC reported in :attr:`StackingFuser.metrics_` are computed on those too.

Serialisation is JSON (:meth:`StackingFuser.to_dict` / :meth:`from_dict`): coefficients,
intercepts, calibrator parameters, feature list, threshold and metadata; loading runs no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from common.atomic import atomic_path, atomic_write
from common.errors import InputNotFoundError, UserError, one_line
from common.metrics import best_f1_threshold
from common.oof import validate_oof
from common.tracking import download_model

FORMAT = "landslide-stacking-fuser"
FORMAT_VERSION = 1
FUSER_ARTIFACT = "fuser.json"
INPUT_COLUMNS: tuple[str, str] = ("p_tabular", "p_imagery")
SUBMODELS: dict[str, tuple[str, ...]] = {
    "both": ("logit_p_tabular", "logit_p_imagery"),
    "tabular_only": ("logit_p_tabular",),
    "imagery_only": ("logit_p_imagery",),
}
_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [1e-6, 1 - 1e-6]."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class _LinearCalibrated:
    """One sub-model: ``p = calibrate(x @ coef + intercept)`` on logit features."""

    features: tuple[str, ...]
    coef: np.ndarray
    intercept: float
    calibration: dict[str, Any] = field(default_factory=lambda: {"method": "none"})

    def decision(self, z: np.ndarray) -> np.ndarray:
        return z @ self.coef + self.intercept

    def predict(self, z: np.ndarray) -> np.ndarray:
        f = self.decision(z)
        method = self.calibration["method"]
        if method == "none":
            return _sigmoid(f)
        if method == "sigmoid":  # sklearn's _SigmoidCalibration: 1 / (1 + exp(a f + b))
            return 1.0 / (1.0 + np.exp(self.calibration["a"] * f + self.calibration["b"]))
        if method == "isotonic":  # IsotonicRegression(out_of_bounds="clip")
            return np.interp(f, self.calibration["x"], self.calibration["y"])
        raise UserError(f"unknown calibration method {method!r} in fuser JSON")

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "coef": [float(c) for c in self.coef],
            "intercept": float(self.intercept),
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _LinearCalibrated:
        coef = np.asarray(d["coef"], dtype=np.float64)
        if coef.shape != (len(d["features"]),):
            raise UserError(f"fuser JSON: {len(d['coef'])} coefficients for {len(d['features'])} features")
        return cls(tuple(d["features"]), coef, float(d["intercept"]), dict(d.get("calibration", {"method": "none"})))


def _fit_linear(
    z: np.ndarray, y: np.ndarray, features: tuple[str, ...], C: float, calibration: str, cv: int, seed: int
) -> _LinearCalibrated:
    lr = LogisticRegression(C=C, max_iter=1000)
    if calibration == "none":
        lr.fit(z, y)
        return _LinearCalibrated(features, lr.coef_[0].copy(), float(lr.intercept_[0]))
    n_splits = max(2, min(cv, int(np.bincount(y, minlength=2).min())))
    cal = CalibratedClassifierCV(lr, method=calibration, cv=n_splits, ensemble=False).fit(z, y)
    fitted = cal.calibrated_classifiers_[0]
    base, calibrator = fitted.estimator, fitted.calibrators[0]
    if calibration == "sigmoid":
        params: dict[str, Any] = {"method": "sigmoid", "a": float(calibrator.a_), "b": float(calibrator.b_)}
    else:
        params = {
            "method": "isotonic",
            "x": [float(v) for v in calibrator.X_thresholds_],
            "y": [float(v) for v in calibrator.y_thresholds_],
        }
    return _LinearCalibrated(features, base.coef_[0].copy(), float(base.intercept_[0]), params)


def _check_X(X: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(X, pd.DataFrame):
        missing = [c for c in INPUT_COLUMNS if c not in X.columns]
        if missing:
            raise ValueError(
                f"fuser input is missing column(s) {', '.join(missing)}; expected {', '.join(INPUT_COLUMNS)}"
            )
        arr = X.loc[:, list(INPUT_COLUMNS)].to_numpy(dtype=np.float64)
    else:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"fuser input must have 2 columns (p_tabular, p_imagery), got shape {arr.shape}")
    finite = arr[~np.isnan(arr)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("fuser input must hold probabilities in [0, 1] (NaN = missing modality)")
    return arr[:, 0], arr[:, 1]


Calibration = Literal["none", "sigmoid", "isotonic"]
CALIBRATIONS: tuple[str, ...] = get_args(Calibration)


class StackingFuser(ClassifierMixin, BaseEstimator):
    """Logistic-regression stacker on ``(logit p_tabular, logit p_imagery)`` with single-modality fallbacks.

    Parameters: ``C`` (inverse L2 strength of the logistic regressions), ``calibration``
    (``"none"`` | ``"sigmoid"`` | ``"isotonic"``, see module docstring), ``cv`` (folds of the fuser's
    own cross-validation, used for its threshold and its reported metrics), ``random_state``.
    Fit it ONLY on out-of-fold base-model predictions (:meth:`fit_oof` enforces the join).
    """

    def __init__(self, C: float = 1.0, calibration: str = "none", cv: int = 5, random_state: int = 0) -> None:
        self.C = C
        self.calibration = calibration
        self.cv = cv
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------------
    def _fit_submodels(self, pt: np.ndarray, pi: np.ndarray, y: np.ndarray) -> dict[str, _LinearCalibrated]:
        if self.calibration not in CALIBRATIONS:
            raise UserError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")
        has_t, has_i = ~np.isnan(pt), ~np.isnan(pi)
        zt, zi = logit(np.nan_to_num(pt, nan=0.5)), logit(np.nan_to_num(pi, nan=0.5))
        models: dict[str, _LinearCalibrated] = {}
        for name, rows, z in (
            ("both", has_t & has_i, np.column_stack([zt, zi])),
            ("tabular_only", has_t, zt[:, None]),
            ("imagery_only", has_i, zi[:, None]),
        ):
            yr = y[rows]
            if rows.sum() < 4 or len(np.unique(yr)) < 2:
                if name == "both":
                    raise UserError(
                        "the stacker needs out-of-fold rows with both modalities and both classes; "
                        f"got {int(rows.sum())} rows"
                    )
                continue
            models[name] = _fit_linear(
                z[rows], yr, SUBMODELS[name], self.C, self.calibration, self.cv, self.random_state
            )
        return models

    def fit(self, X: Any, y: Any) -> StackingFuser:
        """Fit on out-of-fold probabilities ``X`` ``(n, 2)`` [p_tabular, p_imagery] and labels ``y`` (0/1)."""
        pt, pi = _check_X(X)
        y_arr = np.asarray(y).astype(np.int64).reshape(-1)
        if y_arr.shape[0] != pt.shape[0]:
            raise ValueError(f"y has {y_arr.shape[0]} labels, expected {pt.shape[0]}")
        if not np.isin(y_arr, (0, 1)).all():
            raise ValueError("y must be 0/1 labels")
        self.classes_ = np.array([0, 1])
        self.models_ = self._fit_submodels(pt, pi, y_arr)
        # the fuser's own out-of-fold predictions: threshold and honest metrics
        oof = np.full(pt.shape[0], np.nan)
        min_class = int(np.bincount(y_arr, minlength=2).min())
        n_splits = max(2, min(self.cv, min_class))
        if min_class >= 2:
            skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
            for tr, te in skf.split(pt, y_arr):
                try:
                    sub = StackingFuser(self.C, self.calibration, self.cv, self.random_state)
                    sub.classes_, sub.models_ = self.classes_, sub._fit_submodels(pt[tr], pi[tr], y_arr[tr])
                    sub.threshold_ = 0.5
                    oof[te] = sub._predict(pt[te], pi[te])
                except ValueError:
                    continue  # a fold too small for a sub-model: leave its rows out of the metrics
        ok = ~np.isnan(oof)
        if ok.sum() >= 2 and len(np.unique(y_arr[ok])) == 2:
            self.threshold_ = best_f1_threshold(y_arr[ok], oof[ok])
            self.metrics_ = {
                "stacker_cv_brier": float(brier_score_loss(y_arr[ok], oof[ok])),
                "stacker_cv_roc_auc": float(roc_auc_score(y_arr[ok], oof[ok])),
                "stacker_cv_f1": float(f1_score(y_arr[ok], (oof[ok] >= self.threshold_).astype(int))),
                "stacker_cv_rows": int(ok.sum()),
            }
        else:
            self.threshold_ = 0.5
            self.metrics_ = {"stacker_cv_rows": 0}
        self.oof_proba_ = oof
        # each base model's own F1-best threshold on the same OOF rows (used by the cross-check)
        self.base_thresholds_ = {}
        for name, p in (("tabular", pt), ("imagery", pi)):
            okb = ~np.isnan(p)
            if okb.sum() >= 2 and len(np.unique(y_arr[okb])) == 2:
                self.base_thresholds_[name] = best_f1_threshold(y_arr[okb], p[okb])
        self.n_train_ = int(pt.shape[0])
        self.meta_: dict[str, Any] = getattr(self, "meta_", {})
        return self

    def fit_oof(
        self, tabular_oof: pd.DataFrame, imagery_oof: pd.DataFrame, allow_partial: bool = False
    ) -> StackingFuser:
        """Fit on two ``oof_predictions.csv`` tables joined by ``region_id`` (see :func:`join_oof`)."""
        joined = join_oof(tabular_oof, imagery_oof, allow_partial=allow_partial)
        self.fit(joined[list(INPUT_COLUMNS)], joined["y_true"])
        self.joined_oof_ = joined
        return self

    # -- prediction ----------------------------------------------------------------------------
    def _predict(self, pt: np.ndarray, pi: np.ndarray) -> np.ndarray:
        has_t, has_i = ~np.isnan(pt), ~np.isnan(pi)
        zt, zi = logit(np.nan_to_num(pt, nan=0.5)), logit(np.nan_to_num(pi, nan=0.5))
        out = np.full(pt.shape[0], np.nan)
        both = has_t & has_i
        out[both] = self.models_["both"].predict(np.column_stack([zt[both], zi[both]]))
        for name, rows, z in (("tabular_only", has_t & ~has_i, zt), ("imagery_only", has_i & ~has_t, zi)):
            if rows.any():
                if name in self.models_:
                    out[rows] = self.models_[name].predict(z[rows][:, None])
                else:  # no single-modality sub-model could be fitted: the base probability as is
                    out[rows] = (pt if name == "tabular_only" else pi)[rows]
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, 2)`` [P(no landslide), P(landslide)]; rows with neither modality get NaN."""
        pt, pi = _check_X(X)
        p1 = self._predict(pt, pi)
        return np.column_stack([1 - p1, p1])

    def predict(self, X: Any) -> np.ndarray:
        """0/1 at :attr:`threshold_` (rows with neither modality: 0)."""
        p1 = self.predict_proba(X)[:, 1]
        return (np.nan_to_num(p1, nan=0.0) >= self.threshold_).astype(np.int64)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: sub-models, threshold, params, metrics and ``meta`` (input runs...)."""
        if not hasattr(self, "models_"):
            raise ValueError("StackingFuser is not fitted")
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "input_columns": list(INPUT_COLUMNS),
            "params": {"C": self.C, "calibration": self.calibration, "cv": self.cv, "random_state": self.random_state},
            "threshold": self.threshold_,
            "base_thresholds": getattr(self, "base_thresholds_", {}),
            "models": {k: m.to_dict() for k, m in self.models_.items()},
            "metrics": self.metrics_,
            "n_train": self.n_train_,
            "meta": self.meta_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "fuser JSON") -> StackingFuser:
        """Rebuild a fitted fuser from :meth:`to_dict` output (no pickle)."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(f"{source} is not a stacking-fuser JSON (expected format {FORMAT!r})")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise UserError(f"{source} has format_version {d['format_version']}; this code reads <= {FORMAT_VERSION}")
        try:
            fuser = cls(**d["params"])
            fuser.models_ = {k: _LinearCalibrated.from_dict(v) for k, v in d["models"].items()}
            fuser.threshold_ = float(d["threshold"])
        except (KeyError, TypeError) as exc:
            raise UserError(f"{source} is missing or has a malformed field: {exc}") from None
        if "both" not in fuser.models_:
            raise UserError(f"{source} has no 'both' sub-model")
        fuser.classes_ = np.array([0, 1])
        fuser.metrics_ = dict(d.get("metrics", {}))
        fuser.base_thresholds_ = {k: float(v) for k, v in d.get("base_thresholds", {}).items()}
        fuser.n_train_ = int(d.get("n_train", 0))
        fuser.meta_ = dict(d.get("meta", {}))
        return fuser

    def digest(self) -> str:
        """sha256 of the canonical JSON of this fuser: identifies it (resume fingerprints)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically; returns the path."""
        with atomic_write(path) as fh:
            json.dump(self.to_dict(), fh, indent=2)
        return Path(path)


def _ids_text(ids: pd.Series | list[Any], limit: int = 5) -> str:
    ids = list(ids)
    head = ", ".join(str(i) for i in ids[:limit])
    return head + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def join_oof(tabular_oof: pd.DataFrame, imagery_oof: pd.DataFrame, allow_partial: bool = False) -> pd.DataFrame:
    """Join the two OOF tables by ``region_id`` -> ``region_id, y_true, p_tabular, p_imagery``.

    ``region_id`` values are compared as strings (CSV round trips may change int/str). Without
    ``allow_partial`` every id must be in both tables (the error names the missing ids); with it,
    the outer join keeps one-modality rows (NaN for the other), which fit only the fallback
    sub-models. Labels of a region present in both must agree.
    """
    t = validate_oof(tabular_oof, "tabular oof_predictions").copy()
    i = validate_oof(imagery_oof, "imagery oof_predictions").copy()
    t["_key"], i["_key"] = t["region_id"].astype(str), i["region_id"].astype(str)
    only_t = t.loc[~t["_key"].isin(i["_key"]), "region_id"]
    only_i = i.loc[~i["_key"].isin(t["_key"]), "region_id"]
    if not allow_partial and (len(only_t) or len(only_i)):
        parts = []
        if len(only_t):
            parts.append(f"{len(only_t)} region_id(s) missing from the imagery OOF: {_ids_text(only_t)}")
        if len(only_i):
            parts.append(f"{len(only_i)} region_id(s) missing from the tabular OOF: {_ids_text(only_i)}")
        raise UserError("out-of-fold tables do not cover the same regions: " + "; ".join(parts))
    m = t[["_key", "region_id", "y_true", "p_oof"]].merge(
        i[["_key", "region_id", "y_true", "p_oof"]], on="_key", how="outer", suffixes=("_t", "_i")
    )
    both = m["y_true_t"].notna() & m["y_true_i"].notna()
    clash = m.loc[both & (m["y_true_t"] != m["y_true_i"]), "_key"]
    if len(clash):
        raise UserError(f"y_true differs between the tabular and imagery OOF for region_id {_ids_text(clash)}")
    out = pd.DataFrame(
        {
            "region_id": m["region_id_t"].where(m["region_id_t"].notna(), m["region_id_i"]),
            "y_true": m["y_true_t"].where(m["y_true_t"].notna(), m["y_true_i"]).astype(np.int64),
            "p_tabular": m["p_oof_t"].astype(np.float64),
            "p_imagery": m["p_oof_i"].astype(np.float64),
        }
    )
    if not (out["p_tabular"].notna() & out["p_imagery"].notna()).any():
        raise UserError("out-of-fold tables share no region_id; expected the same regions in both runs")
    return out.reset_index(drop=True)


def reliability_plot(
    y: np.ndarray, probs: dict[str, np.ndarray], path: str | os.PathLike[str], n_bins: int = 10
) -> dict[str, float]:
    """Save a reliability diagram of each named probability vector to ``path`` (PNG, atomic).

    Returns the Brier score of each (rows where the probability is NaN are left out).
    """
    y = np.asarray(y).astype(int)
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
    briers: dict[str, float] = {}
    for name, p in probs.items():
        p = np.asarray(p, dtype=np.float64)
        ok = ~np.isnan(p)
        if ok.sum() < 2 or len(np.unique(y[ok])) < 2:
            continue
        briers[name] = float(brier_score_loss(y[ok], p[ok]))
        frac, mean_pred = calibration_curve(y[ok], p[ok], n_bins=n_bins, strategy="quantile")
        ax.plot(mean_pred, frac, "o-", label=f"{name} (Brier {briers[name]:.3f})")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction of landslide regions")
    ax.set_title("Reliability (out-of-fold)")
    ax.legend(loc="upper left", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return briers


def load_fuser(uri: str | os.PathLike[str], *, tracking_uri: str | None = None) -> StackingFuser:
    """Load a fuser from a JSON path or folder, ``runs:/<run_id>[/fuser.json]``, a bare run id or any
    MLflow artifact URI (:func:`common.tracking.download_model`, resolved against ``tracking_uri``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download_model(
            uri,
            tracking_uri=tracking_uri,
            default_artifact=FUSER_ARTIFACT,
            flag="--fusion-model",
            what="fusion model",
            dst_path=tmp,
        )
        if path.is_dir():
            path = path / FUSER_ARTIFACT
        if not path.is_file():
            raise InputNotFoundError(f"--fusion-model {uri}: no {FUSER_ARTIFACT} at {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"fusion model {path} is not valid JSON: {one_line(exc)}") from None
    return StackingFuser.from_dict(data, source=str(uri))
