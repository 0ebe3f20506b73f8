"""Synchronisation helpers for the pool tests: beacons, bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from types import TracebackType

import psutil  # type: ignore[import-untyped,unused-ignore]  # types-psutil is optional

__all__ = ["Beacon", "wait_gone"]


class Beacon:
    """A loopback listener; worker tasks connect to it to say "I started".

    ``await beacon.wait()`` returns the pid the next task sent, so a test can
    act on a running task without sleeping.
    """

    def __init__(self) -> None:
        self._pids: asyncio.Queue[int] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Beacon:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        self._pids.put_nowait(int(data))

    async def wait(self, timeout: float = 30.0) -> int:
        async with asyncio.timeout(timeout):
            return await self._pids.get()


def _gone(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
        return bool(status == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: Iterable[int], timeout: float = 15.0) -> list[int]:
    """Wait until every pid has exited (zombies count as gone); return survivors."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if not _gone(pid)]
        if remaining:
            time.sleep(0.02)
    return remaining
