"""Task functions only the Dask tests use (importable by Dask workers)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tests.pool._tasks import announce

__all__ = ["AsyncSleeper", "async_sleep_report_cancel", "counting", "dask_setting"]


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


class AsyncSleeper:
    """A callable object with ``async def __call__``: sleeps, then returns ``value``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __call__(self, value: int) -> int:
        await asyncio.sleep(self.seconds)
        return value


def dask_setting(key: str) -> Any:
    """A Dask configuration value as this process (a Dask worker) sees it."""
    import dask

    return dask.config.get(key)
