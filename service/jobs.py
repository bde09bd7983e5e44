"""Jobs behind ``POST /v1/assess``: a bounded queue, a bounded worker pool and a job store on disk.

Every job is a folder ``<workdir>/<job id>/`` holding ``job.json`` (status, progress, message, times and
the request), the job's output files and, when done, ``result.json`` (the result, however large: it is
kept out of ``job.json``). ``job.json`` is rewritten atomically at each change, so a restart never loses a
finished job: on start, jobs that were queued or running when the previous process stopped become
``interrupted``.

Status only moves forward: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``interrupted``; a finished
job never changes again. One owner decides each job's end: the worker that runs it. The job itself runs
in a thread of its own; the worker waits for it at most ``timeout_s`` seconds, then marks the job
``failed`` ("timed out") and is free for the next job at once. The timed-out run is told to stop: its
``progress`` callback raises :class:`JobCancelled`, and the loops of the scene cut, the segmentation and the
region evidence call :func:`common.cancel.check_cancelled`; its result is dropped. Every outbound request of
a job has its own timeout, so a run blocked on the network ends too.

At most ``max_queue`` jobs wait; :meth:`JobStore.submit` raises :class:`QueueFull` beyond (the API answers
429 with ``Retry-After``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from common.cancel import Cancelled, cancellable
from common.errors import UserError, one_line

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FINAL = ("done", "failed", "interrupted")
#: The status a job may move to from each status.
NEXT = {"queued": ("running", "failed", "interrupted"), "running": FINAL}
#: ``job_fn(request, folder, progress) -> result``: ``progress(fraction, message)`` reports progress and
#: raises :class:`JobCancelled` once the job is to stop.
JobFn = Callable[[dict[str, Any], Path, Callable[[float, str], None]], dict[str, Any]]


class QueueFull(Exception):
    """The job queue is full; ``retry_after_s``: a hint for the client."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(f"{waiting} jobs are waiting; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class JobCancelled(Exception):
    """Raised inside a job (by its ``progress`` callback) once it timed out or the service stops."""


class JobStore:
    """Create, run and read jobs under ``workdir``: ``workers`` at a time, at most ``max_queue`` waiting."""

    def __init__(
        self,
        workdir: str | Path,
        job_fn: JobFn,
        *,
        workers: int = 1,
        timeout_s: float = 1800.0,
        max_queue: int = 32,
    ) -> None:
        self.root = Path(workdir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.job_fn = job_fn
        self.timeout_s = float(timeout_s)
        self.max_queue = int(max_queue)
        self.workers = max(1, int(workers))
        self._lock = threading.Lock()
        self._waiting = 0
        self._cancel: dict[str, threading.Event] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="assess")
        for folder in self.root.iterdir():
            state = self._read(folder.name) if JOB_ID.match(folder.name) else None
            if state and state.get("status") in NEXT:
                self._move(folder.name, "interrupted", message="interrupted by a restart of the service")

    # ------------------------------------------------------------------ state
    def _path(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise KeyError(job_id)
        return self.root / job_id / JOB_FILE

    def _read(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(job_id).read_text(encoding="utf-8"))
        except (KeyError, FileNotFoundError, ValueError):
            return None

    def _write(self, job_id: str, state: dict[str, Any]) -> None:
        with atomic_write(self._path(job_id)) as fh:
            json.dump(state, fh, default=str)

    def _move(self, job_id: str, status: str, **changes: Any) -> bool:
        """Move the job to ``status`` if its current status allows it (one way); ``False`` otherwise."""
        with self._lock:
            state = self._read(job_id) or {}
            if status not in NEXT.get(state.get("status", ""), ()):
                return False
            now = time.time()
            state.update(changes, status=status, updated=now)
            if status in FINAL:
                state["finished"] = now
            self._write(job_id, state)
            return True

    def _progress(self, job_id: str, fraction: float, message: str) -> None:
        cancel = self._cancel.get(job_id)
        if cancel is None or cancel.is_set():
            raise JobCancelled(job_id)
        with self._lock:
            state = self._read(job_id) or {}
            if state.get("status") == "running":
                state.update(progress=round(float(fraction), 4), message=str(message)[:200], updated=time.time())
                self._write(job_id, state)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's state (``None`` for an unknown id), with ``result`` when it is done."""
        state = self._read(job_id)
        if state is not None and state.get("status") == "done":
            try:
                state["result"] = json.loads((self.folder(job_id) / RESULT_FILE).read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                state.setdefault("result", None)  # a job finished by an older version kept it in job.json
        return state

    def folder(self, job_id: str) -> Path:
        """Where the job's outputs are."""
        return self._path(job_id).parent

    # ------------------------------------------------------------------ running
    def submit(self, request: dict[str, Any], files: dict[str, bytes | Path] | None = None) -> str:
        """Queue a job for ``request`` (``files``: inputs put into its folder first: bytes, or a file moved in);
        returns its id at once. Raises :class:`QueueFull` when ``max_queue`` jobs are waiting."""
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(self._waiting, retry_after_s=max(1, int(min(self.timeout_s, 60))))
            self._waiting += 1
        try:
            job_id = uuid.uuid4().hex
            folder = self.folder(job_id)
            folder.mkdir(parents=True)
            for name, data in (files or {}).items():
                if isinstance(data, Path):
                    shutil.move(os.fspath(data), folder / name)
                else:
                    (folder / name).write_bytes(data)
            now = time.time()
            state = {"id": job_id, "status": "queued", "progress": 0.0, "message": "queued", "created": now}
            self._write(job_id, {**state, "updated": now, "request": request})
            self._cancel[job_id] = threading.Event()
            self._pool.submit(self._work, job_id, request)
        except BaseException:
            with self._lock:
                self._waiting -= 1
            raise
        return job_id

    def _work(self, job_id: str, request: dict[str, Any]) -> None:
        """The worker: runs the job in its own thread, waits at most ``timeout_s``, and records how it ended."""
        with self._lock:
            self._waiting -= 1
        cancel = self._cancel[job_id]
        if cancel.is_set() or not self._move(job_id, "running", message="started", started=time.time()):
            return
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                with cancellable(cancel):  # loops that call common.cancel.check_cancelled stop once it is set
                    outcome["result"] = self.job_fn(
                        request, self.folder(job_id), lambda f, m: self._progress(job_id, f, m)
                    )
            except BaseException as exc:  # noqa: BLE001 - recorded below by the worker, never a traceback
                outcome["error"] = exc

        runner = threading.Thread(target=run, name=f"job-{job_id[:8]}", daemon=True)
        runner.start()
        runner.join(self.timeout_s)
        cancel.set()  # from here on the run may only stop; its progress raises JobCancelled
        self._cancel.pop(job_id, None)
        if runner.is_alive():
            self._move(job_id, "failed", message=f"timed out after {self.timeout_s:g} s")
            return
        error = outcome.get("error")
        if error is None:
            with atomic_write(self.folder(job_id) / RESULT_FILE) as fh:
                json.dump(outcome.get("result"), fh, default=str)
            self._move(job_id, "done", progress=1.0, message="done")
        elif isinstance(error, UserError):
            self._move(job_id, "failed", message=one_line(error))
        elif isinstance(error, JobCancelled | Cancelled):
            self._move(job_id, "interrupted", message="stopped by the service")
        else:  # a bug: recorded for the operator, never sent as a traceback
            self._move(job_id, "failed", message=f"internal error ({type(error).__name__})")

    def shutdown(self) -> None:
        """Stop taking jobs: queued ones are dropped (``interrupted`` at the next start), running ones told to stop."""
        for cancel in list(self._cancel.values()):
            cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
