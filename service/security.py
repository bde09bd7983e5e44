"""What the service accepts from a client, and what it says back (see README "Security").

* :func:`check_stac_url`: a client's ``stac_url`` is an ``http(s)`` URL on the operator's allow-list, or
  refused with one message that says nothing about the server (a path is never opened or probed).
* :func:`client_message`: an error for a client: server paths replaced by the request field they came
  from (or "a server file"), command-line flags by request field names.
* :func:`decode_patch`: a ``patch_b64`` L4S image whose shape and data type are checked in the HDF5
  header before its (possibly compressed) data are read; read from memory, no temporary file.
* :class:`SecurityHeaders`: ``nosniff``, no framing, no referrer on every response.
* :class:`BodyLimit`: an ASGI middleware counting the bytes of every request body as they are read (chunked
  bodies included) and answering 413 at the limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import h5py
import numpy as np
from starlette.exceptions import HTTPException

from common.errors import UserError, one_line
from common.geo import host_allowed

#: How request fields are called on the command line, for messages that come from shared code.
FLAG_FIELDS = {
    "--scene": "scene",
    "--stac-url": "stac_url",
    "--items": "stac_url",
    "--date": "date",
    "--days-before": "days_before",
    "--radius-m": "point.radius_m",
    "--lat/--lon": "point",
    "--lat": "point.lat",
    "--lon": "point.lon",
    "--bbox": "bbox",
    "--regions": "region",
    "--bands": "bands",
    "--max-cloud": "the service's cloud limit",
    "--event-date": "event_date",
    "--pre-days": "pre_days",
    "--post-days": "post_days",
    "--change-max-cloud": "change_max_cloud",
    "--dem": "the service's DEM",
}
_ABS_PATH = re.compile(r"(?<![\w/:.~-])(?:/[\w.@+~-]+)+/?")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?:/--[a-z][a-z0-9-]*)?")
STAC_REFUSED = "stac_url: expected the http(s) URL of a STAC API this service allows"


def check_stac_url(url: Any, allowed: list[str] | tuple[str, ...]) -> str:
    """``url`` if it is an ``http(s)`` URL on a host of ``allowed``; else one :class:`UserError` for every case."""
    if not isinstance(url, str) or not allowed or not host_allowed(url, allowed):
        raise UserError(STAC_REFUSED)
    return url


def client_message(text: object, labels: Mapping[str, str] | None = None) -> str:
    """``text`` on one line with server paths and command-line flags replaced (module docstring).

    ``labels``: ``{server path: what the client calls it}``, longest paths replaced first; any other
    absolute path becomes "a server file".
    """
    message = one_line(text)
    for path, label in sorted((labels or {}).items(), key=lambda kv: -len(kv[0])):
        if path and path not in ("/", "."):
            message = message.replace(str(path), label)
    message = _ABS_PATH.sub("a server file", message)
    return _FLAG.sub(lambda m: FLAG_FIELDS.get(m.group(0), "a server setting"), message)


class DecodedTooLarge(UserError):
    """The patches of one request would decode to more than the request's budget."""


def decode_patch(
    b64: Any, *, max_side: int, bands: int = 14, what: str = "patch_b64", max_bytes: int | None = None
) -> np.ndarray:
    """The ``(bands, H, W)`` float32 image of a base64 L4S ``image_N.h5`` file (dataset ``img``, ``(H, W, bands)``).

    The dataset's shape (``H, W <= max_side``: the model's patch size), its float data type and its decoded
    size (at most ``max_bytes`` as float32, else :class:`DecodedTooLarge`) are checked from the HDF5 header
    before any data are read or decompressed.
    """
    try:
        raw = base64.b64decode(str(b64), validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{what}: not valid base64") from None
    try:
        with h5py.File(io.BytesIO(raw), "r") as fh:
            obj = fh.get("img")
            if not isinstance(obj, h5py.Dataset):
                raise UserError(f"{what}: no dataset 'img' (expected an L4S image file)")
            shape, dtype = tuple(obj.shape), obj.dtype
            if len(shape) != 3 or shape[2] != bands or not (1 <= shape[0] <= max_side and 1 <= shape[1] <= max_side):
                raise UserError(f"{what}: image of shape {shape}; expected (H, W, {bands}) with H, W <= {max_side}")
            if dtype.kind != "f" or dtype.itemsize > 8:
                raise UserError(f"{what}: data type {dtype}; expected float16/float32/float64")
            if max_bytes is not None and 4 * int(np.prod(shape)) > max_bytes:
                raise DecodedTooLarge(f"{what}: the request's patches decode to more than its budget")
            arr = obj[()]
    except UserError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError):
        raise UserError(f"{what}: not a readable HDF5 image file") from None
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=np.float32)


class BodyTooLarge(HTTPException):
    """A request body went past its limit while being read (an HTTP 413: FastAPI's body parsing lets it through)."""

    def __init__(self, limit_mb: float) -> None:
        super().__init__(413, f"request body larger than the limit of {limit_mb:g} MB")


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]], Any]


class BodyLimit:
    """Count each request's body bytes as the app reads them; past ``limit_mb(path)`` MB: 413.

    A declared ``Content-Length`` over the limit is answered at once; a chunked body (no length) is cut off
    when the count passes the limit (:class:`BodyTooLarge`, which the app turns into a 413).
    """

    def __init__(self, app: ASGIApp, limit_mb: Callable[[str], float]) -> None:
        self.app = app
        self.limit_mb = limit_mb

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit_mb = self.limit_mb(scope.get("path", ""))
        limit = int(limit_mb * 1e6)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _send_413(send, limit_mb)
            return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit_mb)
            return message

        await self.app(scope, counted, send)


#: Headers on every response: no MIME sniffing, no framing by other sites, no URL sent on to other sites.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every HTTP response (those it already has are kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


async def _send_413(send: Any, limit_mb: float) -> None:
    body = json.dumps({"error": f"request body larger than the limit of {limit_mb:g} MB"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_SCRIPT = re.compile(rb"<script\b([^>]*)>(.*?)</script\s*>", re.DOTALL | re.IGNORECASE)


def report_csp(html: bytes) -> str:
    """The Content-Security-Policy for a report page served by the API: its own inline ``<script>`` blocks
    (by SHA-256 hash) and nothing else may run; no inline event handlers, no ``javascript:`` URLs, no remote
    scripts, frames, forms or connections; images and styles inline or from the page."""
    import hashlib  # noqa: PLC0415 - only when a report is served

    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for attrs, body in _SCRIPT.findall(html)
        if b"src=" not in attrs.lower()
    ]
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + (" ".join(hashes) or "'none'"),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
