"""Thread priorities: a helper thread that fills idle cores instead of taking them from the main work."""

from __future__ import annotations

import os
import sys
import threading

#: Niceness added to a background reader (``lower_this_thread``): at +10 the Linux scheduler gives a busy
#: thread about a tenth of the share of a thread at 0, so it runs where a core would otherwise idle.
BACKGROUND_NICENESS = 10


def lower_this_thread(niceness: int = BACKGROUND_NICENESS) -> bool:
    """Lower the calling thread's CPU priority by ``niceness`` (Linux, where every thread has its own nice
    value); True if it was lowered, False where the platform or the process's limits do not allow it (the
    thread then runs at the process's priority, as before). Irreversible for an unprivileged thread: call it
    only in a thread made for the background work (a ``ThreadPoolExecutor``'s ``initializer``)."""
    if not sys.platform.startswith("linux") or niceness <= 0:
        return False
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(now + int(niceness), 19))
    except OSError:
        return False
    return True
