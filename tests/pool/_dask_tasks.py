"""Task functions only the Dask tests use (importable by Dask workers)."""

from __future__ import annotations

import asyncio
import socket

from tests.pool._tasks import announce

__all__ = ["async_sleep_report_cancel", "counting"]


async def async_sleep_report_cancel(port: int, seconds: float) -> None:
    """Announce the start; if cancelled, connect again to say so, then re-raise."""
    announce(port)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"-1")
        raise


class counting:  # lower case: used like a generator function
    """An endless iterator that counts what was taken from it."""

    def __init__(self) -> None:
        self.taken = 0

    def __iter__(self) -> counting:
        return self

    def __next__(self) -> int:
        self.taken += 1
        return self.taken
