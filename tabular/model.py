"""``LandslideClassifier``: a native LightGBM Booster with an sklearn-style interface.

Input tables are matched to the training columns *by name* (extra columns are ignored, order does
not matter); missing columns raise ValueError naming them. Categorical columns are encoded with the
levels seen in training (level ``i`` -> integer code ``i``, given to LightGBM as a categorical
feature). At predict time a level never seen in training, like a missing value, is encoded as
*missing* (NaN: LightGBM sends it down each split's default branch); the count of such values per
column is kept in ``last_unseen_counts_`` and reported with a ``UserWarning``.

Probabilities are P(landslide) in [0, 1]; SHAP contributions are in log-odds (raw score) units.

Optional compiled prediction (:meth:`LandslideClassifier.compile`): the Booster's text model, cut at
``best_iteration_``, is compiled to native code with lleaves (LLVM). ``predict_proba`` then uses it
with the same column matching and encoding (a float64 matrix in ``feature_names_`` order; categorical
columns as integer level codes, missing / unseen levels as NaN). lleaves applies the same rules as
LightGBM's categorical splits (NaN and negative codes go right, a code is "left" when its bit is set
in the split's bitset) and the binary objective's sigmoid, so its output equals ``Booster.predict``
to floating-point rounding. ``contributions`` / ``explain`` always use the Booster.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tabular.config import LGBMParams

METADATA_VERSION = 1
_COMPILE_OPTIONS = "lleaves fp64 blocksize=34 O3 inline codemodel=large"  # part of the compile cache key


def level_strings(series: pd.Series) -> pd.Series:
    """Categorical values as strings (integral floats as ``'3'`` not ``'3.0'``); missing stays NaN."""
    out = series.astype(object)
    mask = series.notna()

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()

    return out.where(~mask, out[mask].map(fmt)) if mask.any() else out


def _compile_lleaves(model: Any, cache: Path | None) -> None:
    """Compile an uncompiled ``lleaves.Model`` in place (what ``Model.compile()`` does).

    lleaves 1.3.0's ``Model.compile`` optimizes with llvmlite's legacy ``PassManagerBuilder``, which
    llvmlite 0.45+ removed (``AttributeError`` with the pinned llvmlite 0.50). This builds the same
    LLVM module with lleaves' own parser and code generator (fp64, cache block size 34, binary
    objective applied, i.e. probabilities), optimizes it with llvmlite's new pass manager at O3
    with inlining, and JIT-links it for the host CPU with MCJIT as lleaves does (``cache``:
    object-code file to load if it exists, else written after compiling). No fast-math flags: the
    trees are summed in order, as LightGBM does.
    """
    import llvmlite.binding as llvm
    import llvmlite.ir
    from lleaves.compiler.ast import parse_to_ast
    from lleaves.compiler.codegen import gen_forest
    from lleaves.lleaves import get_entry_func_type

    llvm.initialize_native_target()  # llvm.initialize() (called by lleaves) now raises
    llvm.initialize_native_asmprinter()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    tm = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, reloc="pic", codemodel="large"
    )
    root = "forest_root"
    cached = cache is not None and cache.exists()
    if cached:
        module = llvm.parse_assembly("")  # the object code comes from the cache
    else:
        forest = parse_to_ast(model.model_file)
        forest.raw_score = False
        ir_module = llvmlite.ir.Module(name="forest")
        gen_forest(forest, ir_module, 34, root, True)
        ir_module.triple = llvm.get_process_triple()
        module = llvm.parse_assembly(str(ir_module))
        module.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pto.inlining_threshold = 1
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(module, pb)
    engine = llvm.create_mcjit_compiler(module, tm)
    if cache is not None:
        if cached:
            engine.set_object_cache(getbuffer_func=lambda _m: cache.read_bytes())
        else:
            engine.set_object_cache(notify_func=lambda _m, buf: cache.write_bytes(buf))
    engine.finalize_object()
    engine.run_static_constructors()
    model.use_fp64 = True
    model._execution_engine = engine  # keeps the code alive
    model._c_entry_func = get_entry_func_type(True)(engine.get_function_address(root))
    model.is_compiled = True


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
        self.compiled_: Any | None = None  # lleaves.Model after compile()
        self.compiled_threads_: int | None = None
        self._compiled_for: tuple[lgb.Booster, int] | None = None  # (booster_, best_iteration_) compiled

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
        self.compiled_ = None
        self._compiled_for = None
        return self

    # ------------------------------------------------------------------ inference
    def _booster(self) -> lgb.Booster:
        if self.booster_ is None:
            raise ValueError("model is not fitted")
        return self.booster_

    def compile(self, cache_dir: str | Path | None = None, *, num_threads: int | None = None) -> LandslideClassifier:
        """Compile the trees to native code with lleaves; afterwards ``predict_proba`` uses it.

        Opt-in: compiling costs seconds (roughly proportional to the number of trees). The model text
        is cut at ``best_iteration_`` so the compiled forest holds exactly the trees
        ``Booster.predict(num_iteration=best_iteration_)`` uses.

        ``cache_dir``: folder for the compiled object code, keyed by a hash of the model text, the
        lleaves / llvmlite versions and the host CPU (name and features), so a later call on the
        same model and machine loads it instead of compiling. ``num_threads``: prediction threads
        (None: ``params.threads_for(n_rows)``, i.e. 1 below 100k rows, all cores above).
        Returns ``self``. Raises ValueError when the model is not fitted or ``num_threads < 1``.
        """
        import llvmlite
        import llvmlite.binding as llvm_binding
        import lleaves
        from importlib.metadata import version

        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        booster = self._booster()
        text = booster.model_to_string(num_iteration=self.best_iteration_ or None)
        try:
            cpu_features = llvm_binding.get_host_cpu_features().flatten()
        except RuntimeError:
            cpu_features = ""
        key_src = "\n".join(
            [text, _COMPILE_OPTIONS, version("lleaves"), llvmlite.__version__, llvm_binding.get_host_cpu_name(), cpu_features]
        )
        key = hashlib.sha256(key_src.encode("utf-8")).hexdigest()[:24]
        with tempfile.TemporaryDirectory(prefix="lleaves_") as tmp:
            model_file = Path(tmp) / "model.txt"
            model_file.write_text(text, encoding="utf-8")
            model = lleaves.Model(model_file=str(model_file))
            if cache_dir is None:
                _compile_lleaves(model, None)
            else:
                cache = Path(cache_dir)
                cache.mkdir(parents=True, exist_ok=True)
                target = cache / f"lleaves_{key}.o"
                if target.exists():
                    _compile_lleaves(model, target)
                else:
                    obj = Path(tmp) / "model.o"  # lleaves writes it once compiled; publish atomically
                    _compile_lleaves(model, obj)
                    fd, part = tempfile.mkstemp(dir=cache, prefix=f".{target.name}.", suffix=".part")
                    try:
                        with os.fdopen(fd, "wb") as fh:
                            fh.write(obj.read_bytes())
                        os.replace(part, target)
                    except BaseException:
                        Path(part).unlink(missing_ok=True)
                        raise
        n_iter = booster.current_iteration()
        expected_trees = booster.num_model_per_iteration() * (min(self.best_iteration_, n_iter) if self.best_iteration_ else n_iter)
        if model.num_trees() != expected_trees or model.num_feature() != len(self.feature_names_):
            raise ValueError(
                f"compiled model has {model.num_trees()} trees / {model.num_feature()} features, expected "
                f"{expected_trees} / {len(self.feature_names_)}"
            )
        self.compiled_ = model
        self.compiled_threads_ = num_threads
        self._compiled_for = (booster, self.best_iteration_)
        return self

    @property
    def is_compiled(self) -> bool:
        """True when ``predict_proba`` uses the compiled (lleaves) forest."""
        return self.compiled_ is not None

    def _predict_positive(self, Xe: np.ndarray) -> np.ndarray:
        """P(landslide) for an encoded matrix, compiled when available, else ``Booster.predict``."""
        n = len(Xe)
        if self.compiled_ is not None:
            done = self._compiled_for
            if done is None or done[0] is not self.booster_ or done[1] != self.best_iteration_:
                raise ValueError("the compiled model is stale (booster or best_iteration_ changed); call compile() again")
            if n == 0:
                return np.empty(0, dtype=np.float64)
            threads = self.compiled_threads_ or self.params.threads_for(n)
            return np.asarray(self.compiled_.predict(np.ascontiguousarray(Xe, dtype=np.float64), n_jobs=threads))
        return self._booster().predict(Xe, num_iteration=self.best_iteration_ or None, num_threads=self.params.threads_for(n))

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
