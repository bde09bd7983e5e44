"""The Dask client of the commands with ``--engine dask`` (tabular training and scoring, ``map_event``): an
existing scheduler (``--scheduler ADDRESS``) or a local cluster of worker processes on 127.0.0.1.

A scheduler that does not answer as one within :data:`CONNECT_TIMEOUT_S` (an unreachable host, or a port
that accepts connections but speaks another protocol) is a one-line :class:`common.errors.UserError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from common.errors import UserError, one_line

CONNECT_TIMEOUT_S = 10


@contextlib.contextmanager
def dask_client(scheduler: str | None, n_workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler``, or on a local cluster of ``n_workers`` processes (127.0.0.1)."""
    from distributed import Client, LocalCluster  # noqa: PLC0415 - distributed loads only for --engine dask

    if scheduler:
        try:
            probe_scheduler(scheduler, CONNECT_TIMEOUT_S)
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(
                f"--scheduler {scheduler}: cannot reach the Dask scheduler "
                f"({one_line(exc)[:160] or f'no answer within {CONNECT_TIMEOUT_S} s'}); "
                "expected the address of a running scheduler, e.g. tcp://host:8786"
            ) from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def probe_scheduler(address: str, timeout: float) -> None:
    """Ask ``address`` for its identity within ``timeout`` seconds in all (connect, handshake, reply).

    ``distributed.Client(address, timeout=...)`` bounds the TCP connect only: a port that accepts the
    connection but speaks another protocol (an HTTP server, say) leaves it waiting for a handshake
    forever. Raises ``TimeoutError``, ``OSError`` or ``ValueError`` (not a Dask scheduler).
    """
    import asyncio  # noqa: PLC0415 - only for --engine dask with --scheduler

    from distributed.comm import connect  # noqa: PLC0415 - distributed loads only for --engine dask

    async def identity() -> Any:
        comm = await connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded() -> Any:
        return await asyncio.wait_for(identity(), timeout)

    reply = asyncio.run(bounded())
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise ValueError(f"it answered as {str(reply)[:60]!r}, not as a Dask scheduler")
