"""Jobs behind ``POST /v1/assess``: a bounded worker pool and a job store on disk.

Every job is a folder ``<workdir>/<job id>/`` holding ``job.json`` (status, progress, message, times,
the request and, when done, the result) and the job's output files. ``job.json`` is rewritten
atomically at each change, so a restart never loses a finished job: on start, the store reads every
folder; jobs that were queued or running when the previous process stopped are marked ``failed``
("interrupted by a restart").

Status: ``queued`` -> ``running`` -> ``done`` | ``failed``. A job that runs longer than its timeout is
marked ``failed`` (its thread cannot be killed; it finishes in the background and its result is
dropped).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from common.cli import UserError, one_line

JOB_FILE = "job.json"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
#: ``job_fn(request, folder, progress) -> result``: ``progress(fraction, message)`` reports progress.
JobFn = Callable[[dict[str, Any], Path, Callable[[float, str], None]], dict[str, Any]]


class JobStore:
    """Create, run and read jobs under ``workdir`` with at most ``workers`` running at a time."""

    def __init__(self, workdir: str | Path, job_fn: JobFn, *, workers: int = 1, timeout_s: float = 1800.0) -> None:
        self.root = Path(workdir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.job_fn = job_fn
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="assess")
        self._watch = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="assess-watch")
        for folder in self.root.iterdir():
            state = self._read(folder.name) if JOB_ID.match(folder.name) else None
            if state and state["status"] in ("queued", "running"):
                self._update(folder.name, status="failed", message="interrupted by a restart of the service")

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

    def _update(self, job_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            state = self._read(job_id) or {}
            state.update(changes, updated=time.time())
            with atomic_write(self._path(job_id)) as fh:
                json.dump(state, fh, default=str)
            return state

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's state (``None`` for an unknown id)."""
        return self._read(job_id)

    def folder(self, job_id: str) -> Path:
        """Where the job's outputs are."""
        return self._path(job_id).parent

    # ------------------------------------------------------------------ running
    def submit(self, request: dict[str, Any], files: dict[str, bytes] | None = None) -> str:
        """Queue a job for ``request`` (``files``: inputs written into its folder first); returns its id at once."""
        job_id = uuid.uuid4().hex
        self.folder(job_id).mkdir(parents=True)
        for name, data in (files or {}).items():
            (self.folder(job_id) / name).write_bytes(data)
        self._update(
            job_id, id=job_id, status="queued", progress=0.0, message="queued", created=time.time(), request=request
        )
        future = self._pool.submit(self._run, job_id, request)
        self._watch.submit(self._deadline, job_id, future)
        return job_id

    def _run(self, job_id: str, request: dict[str, Any]) -> None:
        self._update(job_id, status="running", message="started", started=time.time())

        def progress(fraction: float, message: str) -> None:
            state = self._read(job_id) or {}
            if state.get("status") == "running":  # a timed-out job stays failed
                self._update(job_id, progress=round(float(fraction), 4), message=message)

        try:
            result = self.job_fn(request, self.folder(job_id), progress)
        except UserError as exc:
            self._update(job_id, status="failed", message=one_line(exc), finished=time.time())
        except Exception as exc:  # noqa: BLE001 - a bug: recorded for the operator, never sent as a traceback
            self._update(
                job_id, status="failed", message=f"internal error ({type(exc).__name__})", finished=time.time()
            )
        else:
            if (self._read(job_id) or {}).get("status") == "running":
                self._update(job_id, status="done", progress=1.0, message="done", result=result, finished=time.time())

    def _deadline(self, job_id: str, future: Any) -> None:
        self._wait_until_started(job_id)  # the timeout counts from the start, not from the queue
        try:
            future.result(timeout=self.timeout_s)
        except TimeoutError:
            self._update(
                job_id, status="failed", message=f"timed out after {self.timeout_s:.0f} s", finished=time.time()
            )
        except Exception:  # noqa: BLE001 - _run records its own failures
            pass

    def _wait_until_started(self, job_id: str) -> None:
        while (self._read(job_id) or {}).get("status") == "queued":
            time.sleep(0.2)

    def shutdown(self) -> None:
        """Stop taking jobs and wait for the running ones."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._watch.shutdown(wait=False, cancel_futures=True)
