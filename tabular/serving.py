"""Log a :class:`LandslideClassifier` to MLflow and load it back without unpickling.

The model is logged with the MLflow LightGBM flavour (native text Booster, ``model.lgb``), with a
signature and input example of the Booster's input (the encoded float matrix: categorical columns
as level codes), explicit ``pip_requirements``, and ``tabular_model.json`` (threshold, feature
names, categorical levels, target / positive label) as an extra file beside the Booster. The same
JSON is also logged to the run as ``tabular_model.json``.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
import pandas as pd
from mlflow.models import infer_signature

from common.cli import UserError
from common.tracking import MODEL_DIGEST_TAG, download_model
from tabular.model import LandslideClassifier

METADATA_FILE = "tabular_model.json"
BOOSTER_FILE = "model.lgb"


def pip_requirements() -> list[str]:
    """Pinned requirements to serve the model (the versions installed here)."""
    return [f"lightgbm=={version('lightgbm')}", f"pandas=={version('pandas')}", f"numpy=={version('numpy')}"]


def log_tabular_model(model: LandslideClassifier, X_example: pd.DataFrame, name: str = "model") -> Any:
    """Log ``model`` into the active MLflow run under ``name``; returns MLflow's ``ModelInfo``.

    ``X_example``: a few raw input rows (used for the signature and the input example).
    """
    meta = model.metadata()
    Xe = pd.DataFrame(model.encode(X_example.head(5), warn=False), columns=model.feature_names_)
    signature = infer_signature(
        Xe, model._booster().predict(Xe.to_numpy(), num_iteration=model.best_iteration_ or None)
    )
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / METADATA_FILE
        meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        info = mlflow.lightgbm.log_model(
            model._booster(),
            name=name,
            signature=signature,
            input_example=Xe,
            pip_requirements=pip_requirements(),
            extra_files=[str(meta_path)],
            metadata={"tabular_model": meta},
        )
    mlflow.log_dict(meta, METADATA_FILE)
    mlflow.set_tag(MODEL_DIGEST_TAG, meta["model_digest"])
    return info


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
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{meta_path}: invalid JSON ({exc})") from None
        try:
            booster = lgb.Booster(model_file=str(booster_path))
        except lgb.basic.LightGBMError as exc:
            raise UserError(f"{booster_path}: not a LightGBM model ({' '.join(str(exc).split())[:200]})") from None
    return LandslideClassifier.from_booster(booster, meta)
