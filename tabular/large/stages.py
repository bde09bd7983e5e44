"""A bounded background stage for streamed work: :class:`BackgroundSink` hands items to one thread in order.

Scoring a large table (:func:`tabular.large.local.score_dataset`) runs three stages at once: a reader
thread decodes and encodes the next batches (:meth:`tabular.large.source.TableSource.batches` with
``prefetch``), the calling thread predicts, and a :class:`BackgroundSink` writes (Arrow's Parquet
encoder and zstd run without the GIL). Each queue is bounded, so memory holds a few batches at most;
an error in a stage is re-raised in the calling thread as it was raised (a one-line ``UserError``
stays one line), and the sink's thread has ended before its ``with`` block is left, so an atomic
output folder around it is never renamed into place half-written.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class BackgroundSink(Generic[T]):
    """Calls ``consume(item)`` for every :meth:`put` item, in order, in one background thread.

    ``depth``: items queued at most (``put`` blocks while the queue is full). Used as a context
    manager: a normal exit waits for every item to be consumed and re-raises the consumer's error; an
    exit by an exception stops the consumer (items still queued are dropped) and lets that exception
    through. ``put`` re-raises the consumer's error as soon as it is known.
    """

    def __init__(self, consume: Callable[[T], Any], depth: int = 2, name: str = "sink") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._consume = consume
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is _DONE:
                return
            if self._error is not None or self._stop.is_set():
                continue  # drain without work, so that a blocked put returns
            try:
                self._consume(item)
            except BaseException as exc:  # handed to the producer
                self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        """Queue ``item`` (blocking while ``depth`` items wait); the consumer's error, if any, is raised here."""
        while True:
            self._raise_error()
            try:
                self._q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every item is consumed and the thread has ended; re-raise the consumer's error."""
        self._q.put(_DONE)
        self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        """Stop: drop the items still queued and wait for the thread (an item in progress finishes)."""
        self._stop.set()
        while True:
            try:
                self._q.put(_DONE, timeout=0.05)
                break
            except queue.Full:
                continue
        self._thread.join()

    def __enter__(self) -> BackgroundSink[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
