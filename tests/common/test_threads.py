"""common.threads: a background thread's lower CPU priority, the calling process untouched."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from common.threads import BACKGROUND_NICENESS, lower_this_thread


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_a_pool_thread_runs_lower_and_the_caller_keeps_its_priority() -> None:
    before = _nice()
    with ThreadPoolExecutor(max_workers=1, initializer=lower_this_thread) as pool:
        inside = pool.submit(_nice).result()
    assert inside == min(before + BACKGROUND_NICENESS, 19)
    assert _nice() == before  # only the pool's thread was lowered
    assert lower_this_thread(0) is False
