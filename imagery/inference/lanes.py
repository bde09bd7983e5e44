"""CPU lanes: a batch split over threads that each preprocess and run their share on one core.

On the CPU a torch network runs each operator over all of torch's threads and joins them after it: for the
small networks of this project (128 px tiles, 8-64 channels) many short operators, so the cores wait at every
join, and the preprocessing between two batches (NumPy/OpenCV) is a second fork and join. :class:`Lanes` runs
``n`` threads (one per core, by default as many as torch's threads), each with **one** torch thread (OpenMP's
thread count is per calling thread), and splits each batch into ``n`` parts: every lane cleans, engineers
and runs the network on its part alone, and the lanes join once per batch. Measured on this project's 2-core
Xeon (AVX-512, AMX; eager bf16 inference copy, batch 8 as two lanes of 4; ``benchmarks/RESULTS.md``):
preprocessing and network 1.25-1.37x faster for the width-8 small RAU-Net 1 and 1.35-1.49x for the small one.

Where: :meth:`Segmenter.predict <imagery.inference.segmenter.Segmenter.predict>` splits each batch over the
process's :func:`shared_lanes` when ``Segmenter.lanes > 1`` (``apply_engine`` sets it from :func:`lane_count`, so
every command that runs an engine segmenter on the CPU does; ``predict_scene --lanes`` sets another count through
:func:`with_lanes`); lanes never nest (:func:`in_lane`).

Lanes run eager torch paths only (:data:`LANE_PATHS`): a ``torch.compile`` graph fixes its thread count when it
is compiled and ONNX Runtime sessions own their thread pools, so for those (and on a GPU) a batch runs as one.
The same network object serves every lane (eval mode, no state changed by a forward pass); results are the
same as one stream to the rounding of the operators' own blocking (tested).
"""

from __future__ import annotations

import copy
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

#: The engine paths that run in lanes (eager torch; see the module docstring for the others).
LANE_PATHS: tuple[str, ...] = ("torch-fp32", "torch-bf16")


def lane_count(segmenter: Any, requested: int = 0) -> int:
    """The lanes ``segmenter`` runs in: 1 unless its network is an eager torch path on the CPU; there
    ``requested`` when >= 1 (1: none), else (``0``, auto) one per torch thread."""
    device = getattr(segmenter, "device", torch.device("cpu"))
    engine = getattr(segmenter, "engine", None)
    path = getattr(engine, "path", None)
    if torch.device(device).type != "cpu" or path not in LANE_PATHS:
        return 1
    return planned_lanes(requested)


def with_lanes(segmenter: Any, n: int) -> Any:
    """``segmenter`` splitting its batches over ``n`` lanes (``Segmenter.lanes``): itself where it already does or
    has no lanes (a rule segmenter), else a shallow copy (the same network and counters)."""
    if getattr(segmenter, "lanes", n) == n:
        return segmenter
    out = copy.copy(segmenter)
    out.lanes = n
    return out


def planned_lanes(requested: int = 0) -> int:
    """The lanes an eager torch path on the CPU will run in: ``requested`` when >= 1, else one per torch thread."""
    return int(requested) if requested >= 1 else max(1, torch.get_num_threads())


_LANE = threading.local()


def in_lane() -> bool:
    """Whether the calling thread is a lane (work it starts runs there: lanes never nest)."""
    return bool(getattr(_LANE, "active", False))


def _one_torch_thread(ready: threading.Barrier) -> None:
    # torch sets a thread's OpenMP thread count from the process default on the thread's first use (a lazy,
    # per-thread init): trigger it first, or it would undo the 1 once the caller restores the default
    torch.get_num_threads()
    torch.set_num_threads(1)
    _LANE.active = True
    ready.wait(timeout=60)


class Lanes:
    """``n`` lane threads, each with one torch thread (module docstring); a context manager.

    ``Lanes(1)`` starts no thread and runs every call in the caller's thread. The process's torch thread count
    (``torch.get_num_threads()`` of the caller, and of threads started later) is left as it was.
    """

    def __init__(self, n: int = 1) -> None:
        self.n = max(1, int(n))
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Lanes:
        if self.n > 1:
            before = torch.get_num_threads()
            self._pool = ThreadPoolExecutor(max_workers=self.n, thread_name_prefix="lane")
            ready = threading.Barrier(self.n)
            for f in [self._pool.submit(_one_torch_thread, ready) for _ in range(self.n)]:
                f.result()  # all n threads started, each set to one torch thread
            torch.set_num_threads(before)  # the default for threads started later (and this one) as it was
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def map(self, fn: Any, parts: list[Any]) -> list[Any]:
        """``[fn(p) for p in parts]``, the parts run side by side in the lanes (in the caller without lanes)."""
        if self._pool is None or len(parts) < 2 or in_lane():
            return [fn(p) for p in parts]
        return list(self._pool.map(fn, parts))

    def split(self, images: Any) -> list[Any]:
        """``images`` ``(N, ...)`` (NumPy or torch) cut along the first axis into at most ``n`` contiguous parts."""
        k = min(self.n, len(images))
        if k <= 1:
            return [images]
        return list(torch.tensor_split(images, k)) if isinstance(images, torch.Tensor) else np.array_split(images, k)


_SHARED: dict[int, Lanes] = {}
_SHARED_LOCK = threading.Lock()


def shared_lanes(n: int) -> Lanes:
    """A started :class:`Lanes` of ``n`` threads kept for the process: what :meth:`Segmenter.predict
    <imagery.inference.segmenter.Segmenter.predict>` splits its batches over (``Segmenter.lanes``)."""
    with _SHARED_LOCK:
        lanes = _SHARED.get(n)
        if lanes is None:
            lanes = _SHARED[n] = Lanes(n).__enter__()
        return lanes


def _forget_shared() -> None:
    """In a forked child (a DataLoader or Dask worker): the parent's lane threads do not exist there."""
    global _SHARED, _SHARED_LOCK
    _SHARED, _SHARED_LOCK = {}, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_shared)
