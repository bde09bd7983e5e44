"""Cooperative cancellation: long loops call :func:`check_cancelled`; a service job that timed out stops there.

``with cancellable(event): ...`` arms the current thread (and contexts copied from it); every
:func:`check_cancelled` inside raises :class:`Cancelled` once ``event`` is set. Outside such a block the
check costs one context-variable read and never raises, so commands are unaffected.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator


class Cancelled(Exception):
    """The work was cancelled (a service job past its timeout, or the service stopping)."""


_EVENT: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("cancel_event", default=None)


@contextlib.contextmanager
def cancellable(event: threading.Event) -> Iterator[None]:
    """Make :func:`check_cancelled` inside the block raise once ``event`` is set."""
    token = _EVENT.set(event)
    try:
        yield
    finally:
        _EVENT.reset(token)


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if the work in this context was cancelled; else return at once."""
    event = _EVENT.get()
    if event is not None and event.is_set():
        raise Cancelled("cancelled")
