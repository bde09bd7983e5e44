"""Errors of the HTTP API: one table from an exception to its HTTP status, and the one JSON error body.

Every error response is ``{"error": "<one line>"}`` (at most 1,000 characters), never a traceback.
:data:`ERROR_STATUS` is read top to bottom and the first class that matches decides:

* :class:`ApiError`: its own status (401, 404, 413, ...), raised by an endpoint; its message.
* ``RequestValidationError``: 422, ``invalid request: <field>: <what pydantic says>``.
* Starlette's ``HTTPException``: its own status (404 for an unknown path, 405, ...); its detail.
* :class:`common.errors.UserError`: 400 (bad GeoJSON, a date in the future, a region too large); its message.
* anything else: 500, ``internal error (<exception type>)``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import UserError, one_line

MAX_MESSAGE = 1000


class ApiError(Exception):
    """A client error: ``status`` (4xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


#: ``(exception class, HTTP status)``; ``None``: the exception carries its own status.
ERROR_STATUS: tuple[tuple[type[Exception], int | None], ...] = (
    (ApiError, None),
    (RequestValidationError, 422),
    (StarletteHTTPException, None),
    (UserError, 400),
    (Exception, 500),
)


def _message(exc: Exception) -> str:
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return f"invalid request: {where or 'body'}: {first.get('msg', 'malformed')}"
    if isinstance(exc, StarletteHTTPException):
        return str(exc.detail)
    if isinstance(exc, ApiError | UserError):
        return str(exc)
    return f"internal error ({type(exc).__name__})"  # never a stack trace in a response


def status_of(exc: Exception) -> int:
    """The HTTP status of ``exc`` by :data:`ERROR_STATUS`."""
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            if status is not None:
                return status
            return int(exc.status if isinstance(exc, ApiError) else getattr(exc, "status_code", 500))
    return 500


def error_response(status: int, message: str) -> JSONResponse:
    """The JSON error body ``{"error": "<one line>"}`` with ``status``."""
    return JSONResponse(status_code=status, content={"error": one_line(message)[:MAX_MESSAGE]})


async def _handle(_: Request, exc: Exception) -> JSONResponse:
    return error_response(status_of(exc), _message(exc))


def install_error_handlers(app: FastAPI) -> None:
    """Answer every exception class of :data:`ERROR_STATUS` through the table."""
    for cls, _status in ERROR_STATUS:
        app.add_exception_handler(cls, _handle)


__all__ = ["ERROR_STATUS", "ApiError", "error_response", "install_error_handlers", "status_of"]
