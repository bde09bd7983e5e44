"""Blocks as tasks: run them in this process (``local``) or on a Dask cluster (``dask``), with a resumable cache.

* **Engines.** ``local`` runs the blocks one after the other. ``dask`` submits them to a ``distributed`` cluster:
  a local one of ``workers`` processes on 127.0.0.1 (started and closed here), or a running one at
  ``scheduler`` (``tcp://host:8786``; SLURM or Kubernetes clusters started with dask-jobqueue or
  dask-kubernetes give such an address). At most ``2 x workers`` blocks are in flight, so results wait in
  memory for a bounded time. A block computes the same numbers on either engine (the same function on the
  same inputs), so the outputs are identical.
* **Cache.** Every finished block is saved as ``<row>_<col>.npz`` (``numpy.savez``, no pickles, written under a
  temporary name and renamed) in a cache folder beside the output, together with ``fingerprint.json``: the hash
  of every input (items, band files' sizes and modification times, DEM, susceptibility) and setting. With
  ``resume`` a block whose file exists under the same fingerprint is read instead of computed; a different
  fingerprint empties the cache. The cache folder is hidden (``.<out>.blocks``) and removed after a
  successful run: a killed run leaves nothing that looks like a finished output.

The cluster comes from :func:`common.dask.dask_client`, the one the tabular Dask engine uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from common.dask import dask_client
from common.geo.grid import Window

Engine = Literal["local", "dask"]
BlockArrays = dict[str, np.ndarray]


def _stat(path: str | None) -> list[Any]:
    if not path:
        return [None]
    try:
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]
    except OSError:
        return [path]  # remote (/vsicurl/) or missing: the name stands for it


def fingerprint(settings: dict[str, Any], files: Sequence[str | None]) -> str:
    """sha256 of the settings (JSON) and of every file's name, size and modification time."""
    text = json.dumps({"settings": settings, "files": [_stat(f) for f in files]}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class BlockCache:
    """Finished blocks of one run, keyed by window, valid for one fingerprint (module docstring)."""

    def __init__(self, folder: Path, digest: str, *, resume: bool) -> None:
        self.folder = folder
        stamp = folder / "fingerprint.json"
        same = stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("sha256") == digest
        if not (resume and same):
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"sha256": digest}), encoding="utf-8")
        self.reused = 0

    def _path(self, win: Window) -> Path:
        return self.folder / f"{int(win.row_off)}_{int(win.col_off)}.npz"

    def get(self, win: Window) -> BlockArrays | None:
        path = self._path(win)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            self.reused += 1
            return {k: data[k] for k in data.files}

    def put(self, win: Window, arrays: BlockArrays) -> None:
        path = self._path(win)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def run_blocks(
    task: Callable[[Window], BlockArrays],
    windows: Sequence[Window],
    on_result: Callable[[Window, BlockArrays], None],
    *,
    engine: Engine = "local",
    scheduler: str | None = None,
    workers: int = 2,
    cache: BlockCache | None = None,
) -> int:
    """Run ``task`` on every window not in ``cache``, calling ``on_result`` for each (cached ones first).

    Returns the number of blocks computed (not read from the cache).
    """
    todo: list[Window] = []
    for win in windows:
        hit = cache.get(win) if cache is not None else None
        if hit is None:
            todo.append(win)
        else:
            on_result(win, hit)

    def done(win: Window, arrays: BlockArrays) -> None:
        if cache is not None:
            cache.put(win, arrays)
        on_result(win, arrays)

    if engine == "local":
        for win in todo:
            done(win, task(win))
        return len(todo)
    if engine != "dask":
        raise ValueError(f"engine must be local or dask, got {engine!r}")
    from distributed import as_completed  # noqa: PLC0415 - only for --engine dask

    with dask_client(scheduler, workers) as client:
        limit = max(2, 2 * len(client.scheduler_info().get("workers", {})) or 2 * workers)
        pending = iter(todo)
        futures = {}
        for win in pending:
            futures[client.submit(task, win, pure=False)] = win
            if len(futures) >= limit:
                break
        queue = as_completed(list(futures))
        for fut in queue:
            win = futures.pop(fut)
            done(win, fut.result())
            nxt = next(pending, None)
            if nxt is not None:
                new = client.submit(task, nxt, pure=False)
                futures[new] = nxt
                queue.add(new)
    return len(todo)
