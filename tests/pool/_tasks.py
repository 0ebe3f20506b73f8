"""Task functions for the pool tests: importable by spawned/forked workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "AsyncCallable",
    "NeedsContextError",
    "TaskFailedError",
    "Unpicklable",
    "add",
    "announce",
    "announce_then_sleep",
    "async_announce_then_sleep",
    "async_add",
    "async_pid",
    "async_sleep",
    "blob",
    "blocking_coroutine",
    "boom",
    "crash_once",
    "deaf_sleep",
    "get_initialized",
    "gil_hog",
    "inc",
    "init_exit",
    "init_fail",
    "init_hang",
    "init_mark",
    "kill_self",
    "length",
    "preloaded",
    "make_unpicklable",
    "nested_pool_square",
    "pid",
    "raise_unrebuildable",
    "returns_coroutine",
    "run_asyncio",
    "running_loop_module",
    "sigkill_once",
    "sleep_then",
    "spin",
    "square",
    "swallow_cancel",
    "touch_and_wait",
]

_initialized: list[Any] = []


def inc(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


async def async_sleep(seconds: float, value: Any = None) -> Any:
    await asyncio.sleep(seconds)
    return value


async def async_pid() -> int:
    return os.getpid()


def pid(_: object = None) -> int:
    return os.getpid()


def sleep_then(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


class TaskFailedError(Exception):
    pass


def _inner_failure(value: int) -> None:
    raise TaskFailedError(f"bad value {value}")


def boom(value: int) -> int:
    if value == 3:
        _inner_failure(value)
    return value


class Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()


def make_unpicklable() -> Unpicklable:
    return Unpicklable()


def kill_self(marker: str) -> None:
    """Announce the pid in ``marker`` and SIGKILL the worker."""
    Path(marker).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def crash_once(marker: str) -> int:
    """Die the first time (no ``marker`` yet), succeed when run again."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os._exit(3)
    return os.getpid()


def sigkill_once(marker: str) -> int:
    """SIGKILL the worker the first time (no ``marker`` yet), succeed when run again."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def touch_and_wait(marker: str, seconds: float) -> None:
    """Create ``marker`` (the task started), then block."""
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)


def init_mark(value: Any) -> None:
    _initialized.append(value)


def get_initialized() -> list[Any]:
    return list(_initialized)


def init_fail() -> None:
    raise RuntimeError("initializer refused")


def announce(port: int) -> int:
    """Tell the test (listening on 127.0.0.1:``port``) this worker's pid."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(str(os.getpid()).encode())
    return os.getpid()


def announce_then_sleep(port: int, seconds: float) -> int:
    announce(port)
    time.sleep(seconds)
    return os.getpid()


async def async_announce_then_sleep(port: int, seconds: float) -> int:
    announce(port)
    await asyncio.sleep(seconds)
    return os.getpid()


async def running_loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def deaf_sleep(seconds: float) -> None:
    """Sleep with SIGALRM blocked, like C code that never checks for signals."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        time.sleep(seconds)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


def blob(size: int) -> bytes:
    return b"x" * size


def length(data: bytes) -> int:
    return len(data)


class NeedsContextError(Exception):
    """An exception whose pickled form cannot be rebuilt (keyword-only init)."""

    def __init__(self, *, context: str) -> None:
        super().__init__(f"failed in {context}")


def raise_unrebuildable() -> None:
    raise NeedsContextError(context="the worker")


async def blocking_coroutine(seconds: float) -> None:
    """Blocks its worker's event loop (a bug the pool must survive)."""
    time.sleep(seconds)


async def swallow_cancel(seconds: float) -> None:
    """Ignores cancellation until ``seconds`` have passed."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(end - time.monotonic())


def init_hang() -> None:
    time.sleep(1e6)


def init_exit() -> None:
    os._exit(3)


def gil_hog(marker: str) -> int:
    """Create ``marker.PID``, then one long C call that holds the GIL (minutes)."""
    Path(f"{marker}.{os.getpid()}").touch()
    return sum(range(3 * 10**10))


def run_asyncio(x: int) -> int:
    """A plain function that runs its own event loop."""
    return asyncio.run(async_add(x, 1))


class AsyncCallable:
    """An object whose call returns a coroutine (``async def __call__``)."""

    async def __call__(self, x: int) -> int:
        await asyncio.sleep(0)
        return x * 10


def returns_coroutine(x: int) -> Any:
    """A plain function returning an awaitable."""
    return async_add(x, 2)


async def nested_pool_square(x: int) -> int:
    """Starts a pool inside a worker and uses it."""
    from asyncconc import LoopPool

    async with LoopPool(1) as inner:
        return await inner.submit(square, x)


def preloaded() -> tuple[bool, int, int]:
    """(was tests.pool._preloaded loaded before this call, its importer's pid, my pid)."""
    import sys

    loaded = "tests.pool._preloaded" in sys.modules
    from tests.pool import _preloaded

    return loaded, _preloaded.IMPORTED_BY, os.getpid()
