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
from common.geo.client import check_source, current_sources

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


def _open(path: PathLike, drivers: tuple[str, ...] | None) -> rasterio.io.DatasetReader:
    """``rasterio.open``; with ``drivers``, each driver alone in turn (no other GDAL driver ever sees the file)."""
    if drivers is None:
        return rasterio.open(path)
    error: RasterioIOError | None = None
    for driver in drivers:
        try:
            return rasterio.open(path, driver=driver)
        except RasterioIOError as exc:
            error = exc
    raise error or RasterioIOError("no driver allowed")


@contextlib.contextmanager
def open_raster(path: PathLike) -> Iterator[rasterio.io.DatasetReader]:
    """Open ``path`` for reading; a missing, unreadable or CRS-less raster raises a one-line ``UserError``.

    The error names the path and what was expected. Read errors raised *inside* the block are not
    translated here (callers wrap their reads with :func:`read_errors`).
    """
    sources = current_sources()
    if sources is not None:  # a raster a client chose: checked first, never probed (common.geo.client)
        check_source(path, sources)
    elif not is_remote(path):
        p = Path(path)
        if not p.exists():
            raise UserError(f"raster not found: {p} (expected a GeoTIFF/COG or any GDAL-readable raster)")
        if p.is_dir():
            raise UserError(f"raster path is a folder, expected a file: {p}")
    try:
        with warnings.catch_warnings():  # a raster without georeferencing is reported below, once
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = _open(path, sources.drivers if sources is not None else None)
    except RasterioIOError as exc:
        if sources is not None:
            raise UserError(
                "cannot read a raster of the scene (missing, not GeoTIFF/JPEG 2000, or unreachable)"
            ) from None
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
