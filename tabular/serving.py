"""Log a :class:`LandslideClassifier` to MLflow and load it back without unpickling.

The model is logged as an MLflow pyfunc defined by code (:mod:`tabular.pyfunc_model`), with the native
text Booster (``model.lgb``) and ``tabular_model.json`` (threshold, feature names, categorical levels,
target / positive label) as its artifacts, the ``tabular`` and ``common`` packages as code paths, and
explicit ``pip_requirements``. The same JSON is also logged to the run as ``tabular_model.json``.

Why a pyfunc and not the LightGBM flavour: the Booster takes an encoded float matrix (categorical
columns as level *codes*), while the product (``predict_tabular``, the service, fusion) takes the raw
table (categorical columns as level *names*). The LightGBM flavour's signature and input example were
therefore codes that the product refuses (a posted example gave "none of its values ['1', '4', '5']
was seen in training"), and ``mlflow models serve`` scored names wrongly. The pyfunc runs the project's
own preprocessing, so the input example and signature shown in the MLflow UI are the raw columns
(names), and every path (pyfunc, ``mlflow models serve``, ``predict_tabular``, the service) accepts
the same input and returns the same probabilities. Loading in this project still reads only the two
artifact files (:func:`load_tabular_model`); MLflow's own loading runs the logged code, not a pickle.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from common.cli import UserError
from common.tracking import MODEL_DIGEST_TAG, download_model
from tabular.model import LandslideClassifier, level_strings

METADATA_FILE = "tabular_model.json"
BOOSTER_FILE = "model.lgb"
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def pip_requirements() -> list[str]:
    """Pinned requirements to serve the model (the versions installed here)."""
    names = ("lightgbm", "pandas", "numpy", "scikit-learn", "scipy", "pyarrow", "mlflow")
    return [f"{n}=={version(n)}" for n in names]


def raw_example(model: LandslideClassifier, X: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """``rows`` raw input rows as the product takes them: the model's feature columns, categorical ones as
    level names (strings; missing stays missing), numeric ones as float64."""
    Xe = X.head(rows).reset_index(drop=True)
    out = {}
    for name in model.feature_names_:
        col = Xe[name]
        if name in model.categorical_levels_:
            out[name] = level_strings(col).astype(object).where(col.notna().to_numpy(), None)
        else:
            out[name] = pd.to_numeric(col, errors="coerce").astype(np.float64)
    return pd.DataFrame(out)


def log_tabular_model(model: LandslideClassifier, X_example: pd.DataFrame, name: str = "model") -> Any:
    """Log ``model`` into the active MLflow run under ``name``; returns MLflow's ``ModelInfo``.

    ``X_example``: a few raw input rows (the signature and the input example, in level names).
    """
    meta = model.metadata()
    example = raw_example(model, X_example)
    p = model.predict_proba(example)[:, 1]
    signature = infer_signature(
        example, pd.DataFrame({"p_landslide": p, "label": (p >= model.threshold_).astype(np.int64)})
    )
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / METADATA_FILE
        meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        booster_path = Path(tmp) / BOOSTER_FILE
        model._booster().save_model(str(booster_path))
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"booster": str(booster_path), "metadata": str(meta_path)},
            code_paths=[str(_PACKAGE_ROOT / "tabular"), str(_PACKAGE_ROOT / "common")],
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            metadata={"tabular_model": meta},
        )
    mlflow.log_dict(meta, METADATA_FILE)
    mlflow.set_tag(MODEL_DIGEST_TAG, meta["model_digest"])
    return info


def model_from_files(booster_path: Path, meta_path: Path) -> LandslideClassifier:
    """A :class:`LandslideClassifier` from a native Booster file and its ``tabular_model.json``."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{meta_path}: invalid JSON ({exc})") from None
    try:
        booster = lgb.Booster(model_file=str(booster_path))
    except lgb.basic.LightGBMError as exc:
        raise UserError(f"{booster_path}: not a LightGBM model ({' '.join(str(exc).split())[:200]})") from None
    return LandslideClassifier.from_booster(booster, meta)


def _find_file(root: Path, name: str) -> Path | None:
    direct = root / name
    if direct.exists():
        return direct
    hits = sorted(root.rglob(name))
    return hits[0] if hits else None


def load_tabular_model(uri: str, tracking_uri: str | None = None, *, flag: str = "--model") -> LandslideClassifier:
    """Rebuild a :class:`LandslideClassifier` from ``runs:/<id>/model``, a run id, a ``models:/`` URI
    or a local model folder (:func:`common.tracking.download_model`, MLflow URIs resolved against
    ``tracking_uri``). Reads the native Booster text and ``tabular_model.json``; nothing is unpickled.
    ``flag`` is the command-line flag that named the model, for the error messages.

    Raises :class:`common.cli.UserError` naming the URI when it cannot be resolved or is incomplete.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = download_model(uri, tracking_uri=tracking_uri, default_artifact="model", flag=flag, dst_path=tmp)
        if root.is_file():
            root = root.parent
        booster_path = _find_file(root, BOOSTER_FILE)
        meta_path = _find_file(root, METADATA_FILE)
        if booster_path is None or meta_path is None:
            raise UserError(
                f"{flag} {uri} has no {BOOSTER_FILE} and {METADATA_FILE} "
                "(expected a tabular model logged by train_tabular)"
            )
        return model_from_files(booster_path, meta_path)
