"""Region tables for scoring: loading, validation and the image reference of each region.

A region table (CSV or Parquet) has

* ``region_id``: unique, non-empty (int or string);
* optional ``lon``/``lat`` (WGS84 degrees) or bbox columns (``min_lon, min_lat, max_lon, max_lat``),
  carried through but never used as features;
* the tabular model's feature columns (checked against the model with :func:`require_columns`);
* an optional image reference column ``image``: a patch file path, absolute or relative to the
  images folder (empty = no image). Without that column a region's patch is looked up by id in an
  L4S folder: ``<images>/img/image_<region_id>.h5`` or ``<images>/image_<region_id>.h5``;
* an optional label column (``landslide``) for training and evaluation.

Image problems are not fatal by default (documented fallback): a region whose image file is
missing or unreadable is scored by the tabular model alone and its output row says so
(``evidence=tabular_only`` and a ``note``). With ``strict=True`` they are one-line errors naming the
region and file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import InputNotFoundError, UserError
from imagery.data import read_image
from tabular.data import load_table

ID_COLUMN = "region_id"
IMAGE_COLUMN = "image"
LABEL_COLUMN = "landslide"
NON_FEATURE_COLUMNS: tuple[str, ...] = (
    ID_COLUMN,
    IMAGE_COLUMN,
    LABEL_COLUMN,
    "lon",
    "lat",
    "min_lon",
    "min_lat",
    "max_lon",
    "max_lat",
)


def read_region_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read (``.csv``, ``.parquet``/``.pq``, via :func:`tabular.data.load_table`) and validate a region table.

    The reader's checks apply (missing or unreadable file, unsupported format, no rows, duplicate
    column names), then :func:`validate_region_table`'s.
    """
    return validate_region_table(load_table(path), str(path))


def validate_region_table(df: pd.DataFrame, source: str = "region table") -> pd.DataFrame:
    """Check ``region_id`` (present, no missing values, unique) and that the table is not empty."""
    if ID_COLUMN not in df.columns:
        raise UserError(f"{source} has no {ID_COLUMN!r} column; expected one unique id per region")
    if df.empty:
        raise UserError(f"{source} has no rows; expected at least one region")
    ids = df[ID_COLUMN]
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise UserError(f"{source}: {ID_COLUMN} is empty in row {row + 1}; expected an id for every region")
    dup = ids[ids.astype(str).duplicated()]
    if len(dup):
        raise UserError(f"{source}: duplicate {ID_COLUMN} {dup.iloc[0]}; expected unique region ids")
    return df.reset_index(drop=True)


def require_columns(
    df: pd.DataFrame, columns: list[str] | tuple[str, ...], needed_by: str, source: str = "region table"
) -> None:
    """Raise ValueError naming the columns of ``columns`` missing from ``df`` (``needed_by`` says who needs them)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise UserError(f"{source} is missing column(s) {shown} needed by {needed_by}")


@dataclass(frozen=True)
class ImageRef:
    """Where a region's patch is: ``path`` (None = no image given) and why it is unusable (``problem``)."""

    path: Path | None
    problem: str = ""


def resolve_image_refs(df: pd.DataFrame, images_dir: str | os.PathLike[str] | None) -> list[ImageRef]:
    """One :class:`ImageRef` per row: from the ``image`` column if present, else by id in an L4S folder.

    A referenced file that does not exist gets ``problem="image not found: <path>"``; a region
    without a reference (no ``image`` value, or no file for its id) gets ``path=None``.
    """
    base = Path(images_dir) if images_dir is not None else None
    if base is not None and not base.is_dir():
        raise InputNotFoundError(f"--images folder not found: {base}")
    refs: list[ImageRef] = []
    if IMAGE_COLUMN in df.columns:
        for value in df[IMAGE_COLUMN].tolist():
            if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
                refs.append(ImageRef(None))
                continue
            p = Path(str(value))
            if not p.is_absolute() and base is not None:
                p = base / p
            refs.append(ImageRef(p) if p.is_file() else ImageRef(p, f"image not found: {p}"))
        return refs
    if base is None:
        return [ImageRef(None) for _ in range(len(df))]
    sub = base / "img" if (base / "img").is_dir() else base
    for rid in df[ID_COLUMN].tolist():
        p = sub / f"image_{rid}.h5"
        refs.append(ImageRef(p) if p.is_file() else ImageRef(None, f"no image_{rid}.h5 in {sub}"))
    return refs


def load_images(
    refs: list[ImageRef], region_ids: list[object], strict: bool = False
) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    """Read the patches of ``refs``: ``(images (k, 14, H, W) float32 | None, has_image (n,) bool, notes (n,))``.

    ``images`` holds only the readable patches, in row order (``has_image`` marks which rows).
    A missing/unreadable file or one whose ``(H, W)`` differs from the first patch is a note (the
    region falls back to the tabular model) or, with ``strict``, a ValueError naming region and file.
    """
    n = len(refs)
    has = np.zeros(n, dtype=bool)
    notes = [""] * n
    arrays: list[np.ndarray] = []
    shape: tuple[int, ...] | None = None
    for i, (ref, rid) in enumerate(zip(refs, region_ids, strict=True)):
        problem = ref.problem
        if ref.path is not None and not problem:
            try:
                img = read_image(ref.path)
            except (ValueError, OSError) as exc:
                problem = "image unreadable: " + " ".join(str(exc).split())
            else:
                if not np.isfinite(img).any():
                    problem = f"imagery missing: {ref.path} has no finite values (all NaN/Inf)"
                elif shape is not None and img.shape != shape:
                    problem = (
                        f"image unreadable: {ref.path}: shape {img.shape}, expected {shape} like the other patches"
                    )
                else:
                    shape = img.shape
                    arrays.append(img)
                    has[i] = True
                    continue
        if problem:
            if strict and ref.path is not None:
                raise UserError(f"region {rid}: {problem}")
            notes[i] = problem
    images = np.stack(arrays) if arrays else None
    return images, has, notes
