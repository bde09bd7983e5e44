"""Rasters a client of the service chose: read only where the operator allowed, with only the drivers needed.

The service opens rasters named by its clients (an uploaded GeoTIFF, the asset hrefs of STAC items found
at a client's ``stac_url``, a scene picked by name under ``--scenes-root``). Inside
``with client_reads(ClientSources(...)):`` every raster opened through :mod:`common.geo` (``Grid.from_raster``,
``RasterOnGrid``, ``read_raster``) is first checked against the sources:

* ``http(s)://`` URLs (and ``/vsicurl/http(s)://`` paths) only on ``hosts`` (``"host"`` or ``"host:port"``);
* local files only under ``roots`` (after resolving links), and never a GDAL special name (``/vsi*``,
  ``DRIVER:...`` subdatasets, other URL schemes);
* opened only with ``drivers`` (GeoTIFF/COG and JPEG 2000 by default: never VRT, HDF, netCDF or other GDAL
  container formats that open further files), with GDAL's HTTP timeouts, no retries, no directory listing
  and no ``.aux.xml`` side files.

A refused source is a one-line :class:`common.cli.UserError` that does not name the path (it may be a
server path). :func:`inspect_upload` checks an uploaded file before any pixel is read.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import rasterio

from common.errors import UserError

#: TIFF and BigTIFF magic bytes, little and big endian.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: GDAL drivers a client-derived raster may be opened with (COGs are read by GTiff).
CLIENT_DRIVERS = ("GTiff", "JP2OpenJPEG")


@dataclass(frozen=True)
class ClientSources:
    """Where client-chosen rasters may come from, and how they are opened (see the module docstring).

    ``http_timeout_s``: GDAL's whole-request timeout (s); ``connect_timeout_s``: its connection timeout (s).
    """

    hosts: tuple[str, ...] = ()
    roots: tuple[str, ...] = ()
    drivers: tuple[str, ...] = CLIENT_DRIVERS
    http_timeout_s: int = 30
    connect_timeout_s: int = 10

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration options for these reads."""
        return {
            "GDAL_HTTP_TIMEOUT": str(int(self.http_timeout_s)),
            "GDAL_HTTP_CONNECTTIMEOUT": str(int(self.connect_timeout_s)),
            "GDAL_HTTP_MAX_RETRY": "0",
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.JP2",
            "GDAL_PAM_ENABLED": "NO",
        }


_SOURCES: contextvars.ContextVar[ClientSources | None] = contextvars.ContextVar("client_sources", default=None)


def current_sources() -> ClientSources | None:
    """The sources in force in this thread (``None``: the operator's own reads, unchecked)."""
    return _SOURCES.get()


@contextlib.contextmanager
def client_reads(sources: ClientSources) -> Iterator[None]:
    """Check and restrict every raster opened through :mod:`common.geo` inside the block (module docstring)."""
    token = _SOURCES.set(sources)
    try:
        with rasterio.Env(**sources.gdal_options()):
            yield
    finally:
        _SOURCES.reset(token)


@contextlib.contextmanager
def http_timeouts(timeout_s: float = 60.0, connect_timeout_s: float = 10.0) -> Iterator[None]:
    """GDAL's HTTP reads inside the block time out (whole request ``timeout_s``, connection ``connect_timeout_s``)
    and are retried at most once; inside :func:`client_reads` the client sources' own limits stay in force."""
    if current_sources() is not None:
        yield
        return
    with rasterio.Env(
        GDAL_HTTP_TIMEOUT=str(max(1, int(timeout_s))),
        GDAL_HTTP_CONNECTTIMEOUT=str(max(1, int(connect_timeout_s))),
        GDAL_HTTP_MAX_RETRY="1",
    ):
        yield


def host_allowed(url: str, hosts: Sequence[str]) -> bool:
    """True for an ``http(s)`` URL whose host (or ``host:port``) is in ``hosts`` (case-insensitive)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return False
    allowed = {h.lower().rstrip("/") for h in hosts}
    host = parts.hostname.lower()
    return host in allowed or (port is not None and f"{host}:{port}" in allowed)


def _under(path: str, roots: Sequence[str]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(os.path.realpath(r)) for r in roots)


def check_source(path: str | os.PathLike[str], sources: ClientSources) -> None:
    """Refuse ``path`` unless ``sources`` allow it (a one-line error that does not repeat the path)."""
    text = os.fspath(path)
    url = text[len("/vsicurl/") :] if text.startswith("/vsicurl/") else text if "://" in text else None
    if url is not None:
        if not host_allowed(url, sources.hosts):
            raise UserError("asset href refused: only http(s) URLs on the service's allowed hosts are read")
        return
    if text.startswith("/vsi") or ":" in text or not _under(text, sources.roots):
        raise UserError("asset href refused: expected an http(s) URL on an allowed host, not a file path")


@dataclass(frozen=True)
class UploadInfo:
    """What :func:`inspect_upload` found: band count, size in pixels and data type."""

    count: int
    width: int
    height: int
    dtype: str


def inspect_upload(
    path: str | os.PathLike[str],
    *,
    what: str = "scene",
    max_bands: int = 20,
    max_pixels: int = 100_000_000,
    dtypes: Sequence[str] = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"),
) -> UploadInfo:
    """Check an uploaded GeoTIFF before any pixel is read: TIFF magic bytes, opened by GDAL's GTiff driver only,
    at most ``max_bands`` bands and ``max_pixels`` pixels per band, a data type of ``dtypes``, a CRS.

    Errors name the request field ``what``, never the file's path.
    """
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in TIFF_MAGIC:
        raise UserError(f"{what}: not a GeoTIFF (the file does not start with TIFF's magic bytes)")
    try:
        with rasterio.Env(GDAL_PAM_ENABLED="NO", GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
            with rasterio.open(path, driver="GTiff") as ds:
                info = UploadInfo(int(ds.count), int(ds.width), int(ds.height), str(ds.dtypes[0]))
                has_crs = ds.crs is not None
                same_dtype = len(set(ds.dtypes)) == 1
    except rasterio.errors.RasterioError:
        raise UserError(f"{what}: not a readable GeoTIFF") from None
    if not 1 <= info.count <= max_bands:
        raise UserError(f"{what}: {info.count} bands; expected 1 to {max_bands}")
    if info.width * info.height > max_pixels:
        raise UserError(f"{what}: {info.width} x {info.height} pixels; the limit is {max_pixels:,} pixels per band")
    if not same_dtype or info.dtype not in dtypes or not np.dtype(info.dtype).isnative:
        raise UserError(f"{what}: data type {info.dtype}; expected one of {', '.join(dtypes)} for every band")
    if not has_crs:
        raise UserError(f"{what}: the GeoTIFF has no CRS; expected a georeferenced scene")
    return info


__all__ = [
    "CLIENT_DRIVERS",
    "ClientSources",
    "UploadInfo",
    "check_source",
    "client_reads",
    "current_sources",
    "host_allowed",
    "http_timeouts",
    "inspect_upload",
]
