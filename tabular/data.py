"""Load and validate region tables (CSV or Parquet) and split them into features and a 0/1 target.

Every problem a user can fix raises :class:`common.cli.UserError` (``InputNotFoundError`` for a missing
file) with a one-line message naming the file, column or value and what was expected.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.lib
import pyarrow.parquet as pq

from common.cli import InputNotFoundError, UserError

CSV_SUFFIXES = (".csv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
TRUE_WORDS = {"1", "true", "yes", "y", "t", "landslide", "positive", "pos"}
FALSE_WORDS = {"0", "false", "no", "n", "f", "none", "negative", "neg"}
# an object column is treated as numeric-with-typos when at least this share of its values parse as numbers
NUMERIC_SHARE = 0.8


def _check_duplicates(names: list[str], path: Path) -> None:
    dup = sorted(name for name, count in Counter(names).items() if count > 1)
    if dup:
        raise UserError(f"{path}: duplicate column names {dup} (expected unique column names)")


def load_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV (``.csv``/``.txt``) or Parquet (``.parquet``/``.pq``) table.

    Raises FileNotFoundError when missing, ValueError for an unsupported suffix, an unreadable or
    empty file, a table without rows, or duplicate column names.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"data file not found: {p} (expected a CSV or Parquet table)")
    if p.is_dir():
        raise UserError(f"{p} is a directory (expected a CSV or Parquet file)")
    suffix = p.suffix.lower()
    if suffix in CSV_SUFFIXES:
        try:
            with open(p, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
        except UnicodeDecodeError:
            raise UserError(f"{p}: not a UTF-8 text CSV file") from None
        if not header:
            raise UserError(f"{p}: empty file (expected a header row and at least one data row)")
        _check_duplicates([h.strip() for h in header], p)
        try:
            df = pd.read_csv(p)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise UserError(f"{p}: unreadable CSV ({' '.join(str(exc).split())})") from None
        df.columns = [str(c).strip() for c in df.columns]
    elif suffix in PARQUET_SUFFIXES:
        try:
            names = list(pq.read_schema(p).names)
            _check_duplicates(names, p)
            df = pd.read_parquet(p)
        except (pyarrow.lib.ArrowException, OSError) as exc:
            raise UserError(f"{p}: unreadable Parquet file ({' '.join(str(exc).split())})") from None
    else:
        raise UserError(f"{p}: unsupported format {suffix or '(no suffix)'!r} (expected .csv or .parquet)")
    if df.shape[0] == 0:
        raise UserError(f"{p}: table has no data rows (expected at least one)")
    return df


def encode_target(series: pd.Series, positive: str | None = None) -> np.ndarray:
    """Map a target column to 0/1 int64.

    Accepts 0/1, booleans, true/false-like words, or any two labels with ``positive`` naming the
    positive one. Raises ValueError for missing values, one class, more than two classes, or two
    labels that cannot be ordered without ``positive``.
    """
    name = series.name
    if series.isna().any():
        raise UserError(
            f"target column {name!r} has {int(series.isna().sum())} missing values (expected 0/1 for every row)"
        )
    values = series.astype(str).str.strip()
    levels = sorted(values.unique())
    if len(levels) > 2:
        shown = levels[:5] + (["..."] if len(levels) > 5 else [])
        raise UserError(f"target column {name!r} has {len(levels)} classes {shown} (expected exactly two)")
    if positive is not None:
        pos = str(positive).strip()
        if pos not in levels:
            raise UserError(f"--positive value {pos!r} not found in target column {name!r} (values: {levels})")
        if len(levels) < 2:
            raise UserError(f"target column {name!r} has a single class {levels} (expected two classes)")
        return (values == pos).to_numpy(dtype=np.int64)
    if len(levels) < 2:
        raise UserError(f"target column {name!r} has a single class {levels} (expected two classes)")
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().all() and set(np.unique(numeric.to_numpy(dtype=float))) <= {0.0, 1.0}:
        return numeric.to_numpy(dtype=np.int64)
    pos = [lv for lv in levels if lv.lower() in TRUE_WORDS]
    neg = [lv for lv in levels if lv.lower() in FALSE_WORDS]
    if len(pos) == 1 and len(neg) == 1:
        return (values == pos[0]).to_numpy(dtype=np.int64)
    raise UserError(f"target column {name!r} has labels {levels}: pass --positive to say which is the positive class")


def encode_target_array(values: np.ndarray, name: str, positive: str | None = None) -> np.ndarray:
    """:func:`encode_target` for a large column (int8 0/1): the same contract (0/1, booleans, two words,
    ``positive``), applied once to the column's distinct values and broadcast, so that the streamed and
    the in-memory paths read a target the same way."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    missing = int((codes < 0).sum())
    if missing:
        raise UserError(f"target column {name!r} has {missing} missing values (expected 0/1 for every row)")
    per_level = encode_target(pd.Series(np.asarray(uniques), name=name), positive)
    return per_level.astype(np.int8)[codes]


@dataclass
class TrainingTable:
    """A validated training table: features ``X`` (rows x features), target ``y`` (0/1 int64),
    optional ``groups`` (for grouped CV), ``ids`` (region ids) and the categorical feature names."""

    X: pd.DataFrame
    y: np.ndarray
    ids: np.ndarray
    groups: np.ndarray | None
    categorical: list[str]
    id_column: str | None


def infer_categorical(X: pd.DataFrame, categorical: list[str] | None = None) -> list[str]:
    """Categorical feature names: the explicit list, else category/bool columns and text columns
    whose values are mostly not numbers (a mostly-numeric text column is numeric with bad values)."""
    if categorical is not None:
        missing = [c for c in categorical if c not in X.columns]
        if missing:
            raise UserError(f"--categorical columns not found among the features: {missing}")
        return list(categorical)
    cats = []
    for c in X.columns:
        s = X[c]
        if isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(s):
            cats.append(c)
        elif (pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)) and not _mostly_numeric(s):
            cats.append(c)
    return cats


def _mostly_numeric(s: pd.Series) -> bool:
    """True when at least ``NUMERIC_SHARE`` of the non-missing values parse as numbers (a numeric
    column with typos, not a categorical one)."""
    nonnull = s.dropna()
    if len(nonnull) == 0:
        return False
    return float(pd.to_numeric(nonnull, errors="coerce").notna().mean()) >= NUMERIC_SHARE


def validate_features(X: pd.DataFrame, categorical: list[str], source: str = "table") -> None:
    """Reject feature columns that cannot be learned from.

    Raises ValueError for no feature columns, all-NaN or constant columns, and non-numeric
    values in a column that is otherwise numeric (at least 80 % of its values parse as numbers).
    """
    if X.shape[1] == 0:
        raise UserError(f"{source}: no feature columns left after dropping target, id and --drop columns")
    for col in X.columns:
        s = X[col]
        if s.isna().all():
            raise UserError(f"{source}: column {col!r} is all NaN (drop it with --drop)")
        if s.nunique(dropna=True) < 2 and not s.isna().any():
            raise UserError(f"{source}: column {col!r} is constant ({s.dropna().iloc[0]!r}); drop it with --drop")
        if col in categorical or pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        if isinstance(s.dtype, pd.CategoricalDtype):
            continue
        nonnull = s.dropna()
        parsed = pd.to_numeric(nonnull, errors="coerce")
        share = float(parsed.notna().mean()) if len(nonnull) else 0.0
        if share >= NUMERIC_SHARE:
            bad_idx = parsed.index[parsed.isna()]
            raise UserError(
                f"{source}: column {col!r} has non-numeric value {nonnull.loc[bad_idx[0]]!r} at row {bad_idx[0]} "
                f"({len(bad_idx)} such values; expected numbers)"
            )


def prepare_training_table(
    df: pd.DataFrame,
    target: str,
    *,
    positive: str | None = None,
    drop: list[str] | None = None,
    categorical: list[str] | None = None,
    group: str | None = None,
    id_column: str | None = None,
    source: str = "table",
) -> TrainingTable:
    """Split ``df`` into validated features and a 0/1 target.

    ``id_column`` (default ``region_id`` when present, else the row index) and ``group`` are never
    features. Columns are referred to by name; every named column must exist.
    """
    if target not in df.columns:
        raise UserError(f"{source}: target column {target!r} not found (columns: {list(df.columns)[:20]})")
    drop = list(drop or [])
    missing = [c for c in drop if c not in df.columns]
    if missing:
        raise UserError(f"{source}: --drop columns not found: {missing}")
    if group is not None and group not in df.columns:
        raise UserError(f"{source}: --group column {group!r} not found")
    if id_column is None and "region_id" in df.columns:
        id_column = "region_id"
    if id_column is not None and id_column not in df.columns:
        raise UserError(f"{source}: id column {id_column!r} not found")
    y = encode_target(df[target], positive)
    non_features = {target, *drop}
    if group is not None:
        non_features.add(group)
    if id_column is not None:
        non_features.add(id_column)
    X = df[[c for c in df.columns if c not in non_features]]
    cats = infer_categorical(X, categorical)
    validate_features(X, cats, source)
    ids = df[id_column].to_numpy() if id_column is not None else df.index.to_numpy()
    groups = df[group].to_numpy() if group is not None else None
    if groups is not None and pd.isna(groups).any():
        raise UserError(f"{source}: --group column {group!r} has missing values (expected a group for every row)")
    return TrainingTable(X=X.reset_index(drop=True), y=y, ids=ids, groups=groups, categorical=cats, id_column=id_column)
