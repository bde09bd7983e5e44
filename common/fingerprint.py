"""Data fingerprints: a sha256 that changes whenever the data does, plus its shape."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a data set in a run: ``sha256`` of its content, ``rows`` and ``columns``.

    For a table ``rows`` is the row count and ``columns`` the column count; for a set of
    files ``rows`` is the number of files and ``columns`` is 0.
    """

    sha256: str
    rows: int
    columns: int
    source: str = ""

    def as_params(self, prefix: str = "data") -> dict[str, str | int]:
        return {
            f"{prefix}_sha256": self.sha256,
            f"{prefix}_rows": self.rows,
            f"{prefix}_columns": self.columns,
            f"{prefix}_source": self.source,
        }


def fingerprint_dataframe(df: pd.DataFrame, source: str = "") -> Fingerprint:
    """Hash the column names, dtypes and values of ``df`` (row order matters)."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, df.columns)).encode())
    h.update("\x1f".join(str(t) for t in df.dtypes).encode())
    row_hashes = pd.util.hash_pandas_object(df, index=False).to_numpy()
    h.update(np.ascontiguousarray(row_hashes).tobytes())
    return Fingerprint(h.hexdigest(), int(df.shape[0]), int(df.shape[1]), source)


def fingerprint_files(paths: Iterable[str | os.PathLike[str]], source: str = "") -> Fingerprint:
    """Hash the names (relative file names only) and bytes of ``paths``, in sorted name order."""
    files = sorted(Path(p) for p in paths)
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return Fingerprint(h.hexdigest(), len(files), 0, source)


def fingerprint_array(arr: np.ndarray, source: str = "") -> Fingerprint:
    """Hash the bytes, dtype and shape of an array; ``rows`` = first dimension."""
    h = hashlib.sha256()
    h.update(str(arr.dtype).encode() + str(arr.shape).encode())
    if arr.ndim == 0:
        h.update(arr.tobytes())
    else:
        # Slice by slice, so a large (memory-mapped) array is never copied whole into memory.
        row_bytes = max(1, arr[0:1].nbytes)
        step = max(1, (64 << 20) // row_bytes)
        for start in range(0, arr.shape[0], step):
            h.update(memoryview(np.ascontiguousarray(arr[start : start + step])).cast("B"))
    cols = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
    return Fingerprint(h.hexdigest(), int(arr.shape[0]) if arr.ndim else 1, cols, source)
