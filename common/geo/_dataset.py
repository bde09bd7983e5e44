"""Opening rasters with one-line user errors (private helper shared by ``grid`` and ``raster``)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import rasterio
import rasterio.errors
from rasterio.errors import RasterioError, RasterioIOError

from common.errors import UserError

PathLike = str | os.PathLike[str]


def is_remote(path: PathLike) -> bool:
    """True for GDAL virtual paths (``/vsicurl/...``, ``/vsizip/...``) and URLs, which are not checked on disk."""
    text = os.fspath(path)
    return text.startswith("/vsi") or "://" in text


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, for one-line errors."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return exc.__class__.__name__


@contextlib.contextmanager
def open_raster(path: PathLike) -> Iterator[rasterio.io.DatasetReader]:
    """Open ``path`` for reading; a missing, unreadable or CRS-less raster raises a one-line ``UserError``.

    The error names the path and what was expected. Read errors raised *inside* the block are not
    translated here (callers wrap their reads with :func:`read_errors`).
    """
    if not is_remote(path):
        p = Path(path)
        if not p.exists():
            raise UserError(f"raster not found: {p} (expected a GeoTIFF/COG or any GDAL-readable raster)")
        if p.is_dir():
            raise UserError(f"raster path is a folder, expected a file: {p}")
    try:
        with warnings.catch_warnings():  # a raster without georeferencing is reported below, once
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise UserError(f"cannot read raster {path}: {first_line(exc)}") from None
    try:
        if ds.crs is None:
            raise UserError(f"raster {path} has no CRS; expected a georeferenced raster (e.g. a GeoTIFF with a CRS)")
        yield ds
    finally:
        ds.close()


@contextlib.contextmanager
def read_errors(path: PathLike) -> Iterator[None]:
    """Turn a rasterio read failure (truncated or corrupt file) inside the block into a one-line ``UserError``."""
    try:
        yield
    except RasterioError as exc:
        raise UserError(f"cannot read raster {path}: {first_line(exc)}") from None
