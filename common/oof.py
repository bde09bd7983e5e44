"""The out-of-fold (OOF) prediction table: the contract between base models and the stacker.

Every training run that can feed the stacker (``pipelines.train_tabular``, ``pipelines.train_imagery``)
logs :data:`OOF_ARTIFACT` with the columns :data:`OOF_COLUMNS`:

=============  ===============================================================================
column         meaning
=============  ===============================================================================
``region_id``  the region (tabular row id, or imagery patch id); unique
``y_true``     0/1 ground truth (imagery: the patch's mask has a landslide pixel)
``p_oof``      P(landslide) from a model that never saw this region, in [0, 1]
``fold``       the cross-validation fold whose model produced ``p_oof`` (0-based)
=============  ===============================================================================
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from common.atomic import atomic_write
from common.errors import InputNotFoundError, UserError

OOF_COLUMNS: tuple[str, ...] = ("region_id", "y_true", "p_oof", "fold")
OOF_ARTIFACT = "oof_predictions.csv"


def oof_frame(ids: np.ndarray, y_true: np.ndarray, p_oof: np.ndarray, fold: np.ndarray | int) -> pd.DataFrame:
    """An OOF table from arrays of equal length (``fold`` may be one int for every row)."""
    n = len(ids)
    folds = np.full(n, int(fold), dtype=np.int64) if np.ndim(fold) == 0 else np.asarray(fold, dtype=np.int64)
    return pd.DataFrame(
        {
            "region_id": np.asarray(ids),
            "y_true": np.asarray(y_true, dtype=np.int64),
            "p_oof": np.asarray(p_oof, dtype=np.float64),
            "fold": folds,
        }
    )[list(OOF_COLUMNS)]


def validate_oof(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check an OOF table: the columns, rows, unique ids, 0/1 labels, probabilities in [0, 1] without NaN.

    ``fold`` may be absent (older tables). Raises :class:`common.cli.UserError` naming ``name``.
    """
    missing = [c for c in OOF_COLUMNS[:3] if c not in df.columns]
    if missing:
        raise UserError(f"{name} is missing column(s) {', '.join(missing)}; expected {', '.join(OOF_COLUMNS)}")
    if df.empty:
        raise UserError(f"{name} is empty; expected one row per region")
    dup = df["region_id"][df["region_id"].astype(str).duplicated()]
    if len(dup):
        raise UserError(f"{name} has duplicate region_id {dup.iloc[0]}; expected one out-of-fold row per region")
    p = pd.to_numeric(df["p_oof"], errors="coerce")
    bad = df["region_id"][p.isna() | (p < 0) | (p > 1)]
    if len(bad):
        raise UserError(f"{name}: p_oof of region_id {bad.iloc[0]} is not a probability in [0, 1]")
    if not df["y_true"].isin([0, 1]).all():
        bad_id = df["region_id"][~df["y_true"].isin([0, 1])].iloc[0]
        raise UserError(f"{name}: y_true of region_id {bad_id} is not 0/1")
    return df


def read_oof(path: str | os.PathLike[str], name: str = "oof predictions") -> pd.DataFrame:
    """Read and validate an OOF CSV."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{name}: file not found: {p}")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{name} ({p}): unreadable CSV ({' '.join(str(exc).split())})") from None
    return validate_oof(df, f"{name} ({p})")


def write_oof(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write an OOF table (validated, columns in :data:`OOF_COLUMNS` order) as CSV, atomically."""
    table = validate_oof(df, str(path))[[c for c in OOF_COLUMNS if c in df.columns]]
    with atomic_write(path) as fh:
        table.to_csv(fh, index=False)
    return Path(path)


def log_oof(df: pd.DataFrame) -> None:
    """Log an OOF table to the active MLflow run as :data:`OOF_ARTIFACT`."""
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(write_oof(df, Path(tmp) / OOF_ARTIFACT)))
