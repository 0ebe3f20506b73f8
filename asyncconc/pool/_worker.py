"""The worker process: its own event loop, fed by the pool over a socket.

:func:`main` is the process target. It ignores SIGINT (Ctrl-C in a terminal
reaches the whole process group; the pool decides when workers stop), asks
Linux to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and
starts a watchdog thread blocked on a socket whose other end only the pool's
process holds: when that process dies, however it dies, the read returns EOF
and the worker leaves with ``os._exit``. The thread still runs while the
main thread is busy in a long CPU-bound call, which the loop could not do.

Then an :class:`asyncio.Runner` (uvloop when installed) runs the
initializer once and serves jobs until the pool sends STOP:

* plain functions run one at a time, in order, on the loop's thread; a run
  of short jobs yields to the loop every couple of milliseconds so replies
  leave and cancellations arrive;
* coroutine functions run as tasks, at most ``concurrency`` at once.

A per-task timeout cancels a coroutine (``asyncio.timeout``) and interrupts a
plain function with SIGALRM, which works for Python code and for system
calls. For a call stuck inside C code that never checks for signals, the
worker tells the pool when such a job starts (STARTED) and the pool kills
the worker if the job overruns its timeout by a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from asyncconc._errors import PicklingError, TaskTimeoutError
from asyncconc._runner import loop_factory
from asyncconc.pool import _protocol as wire

__all__ = ["WorkerConfig", "describe", "main", "pack_exception"]

_PR_SET_PDEATHSIG = 1
# How long a run of plain-function jobs may hold the loop before replies leave.
_SYNC_SLICE = 0.002

Error = tuple[int, Any, str]
_SyncJob = tuple[int, Callable[..., Any], list[Any], "dict[str, Any] | None", "float | None", bool]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int
    initializer: Callable[..., Any] | None
    initargs: tuple[Any, ...]
    loop: str


def describe(fn: object) -> str:
    """A short name for a callable in error messages: ``module.qualname``."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        inner = getattr(fn, "func", None)  # functools.partial
        return f"partial({describe(inner)})" if inner is not None else repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else str(name)


def pack_exception(exc: BaseException, fn: object) -> Error:
    """The exception itself, pickled, with its traceback as text.

    An exception that does not survive a pickle round trip is replaced by a
    :class:`PicklingError` carrying its type and message.
    """
    text = "".join(traceback.format_exception(exc))
    try:
        blob = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)
    except Exception as problem:
        message = (
            f"{describe(fn)} raised {type(exc).__qualname__}: {exc}, "
            f"which could not be pickled ({problem!r})"
        )
        blob = pickle.dumps(PicklingError(message), protocol=pickle.HIGHEST_PROTOCOL)
    return (wire.ERR_RAISED, blob, text)


def main(config: WorkerConfig, conn: socket.socket, watchdog: socket.socket) -> None:
    """Process target: serve jobs from ``conn`` until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    threading.Thread(target=_watch, args=(watchdog,), name="pool-watchdog", daemon=True).start()
    signal.signal(signal.SIGALRM, _on_alarm)
    with asyncio.Runner(loop_factory=loop_factory(config.loop)) as runner:
        runner.run(_Worker(config).serve(conn))


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _watch(watchdog: socket.socket) -> None:
    # Only the pool's process holds the other end: EOF means it is gone.
    with contextlib.suppress(OSError):
        while watchdog.recv(1):
            pass
    os._exit(0)


_alarm_message = "a task exceeded its timeout"


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TaskTimeoutError(_alarm_message)


def _call_with_alarm(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
) -> Any:
    global _alarm_message
    _alarm_message = f"{describe(fn)} exceeded its timeout of {timeout:g} s"
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class _Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self._config = config
        self._sync_jobs: deque[_SyncJob] = deque()
        self._queued: set[int] = set()  # plain-function jobs not started yet
        self._cancelled: set[int] = set()  # ... of which these were cancelled
        self._async_jobs: dict[int, asyncio.Task[bytes]] = {}
        self._stopping = False
        self._channel: wire.Channel | None = None
        self._wakeup = asyncio.Event()
        self._sem = asyncio.Semaphore(config.concurrency)
        self._is_async: dict[Callable[..., Any], bool] = {}

    async def serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._initialize()
        except Exception as exc:
            _, blob, text = pack_exception(exc, self._config.initializer)
            conn.setblocking(True)
            with contextlib.suppress(OSError):
                conn.sendall(wire.encode(wire.INIT_FAILED, 0, pickle.dumps((blob, text))))
            conn.close()
            return
        channel = wire.Channel(loop, conn, self._on_frames, self._on_parent_gone)
        self._channel = channel
        channel.send(wire.encode(wire.READY, 0, str(os.getpid()).encode()))
        try:
            await self._run_sync_jobs()
            while self._async_jobs:
                await asyncio.wait(list(self._async_jobs.values()))
            await channel.drain()
        finally:
            channel.close()

    async def _initialize(self) -> None:
        init = self._config.initializer
        if init is None:
            return
        result = init(*self._config.initargs)
        if inspect.isawaitable(result):
            await result

    def _on_parent_gone(self) -> None:
        # The pool closed our socket without STOP (terminate) or died: nobody
        # is left to take results, so leave now, abandoning running calls.
        os._exit(0)

    def _on_frames(self, frames: list[wire.Frame]) -> None:
        for kind, ident, payload in frames:
            if kind == wire.JOB:
                self._accept(ident, payload)
            elif kind == wire.CANCEL:
                task = self._async_jobs.get(ident)
                if task is not None:
                    task.cancel()
                elif ident in self._queued:
                    self._cancelled.add(ident)
            elif kind == wire.STOP:
                self._stopping = True
                self._wakeup.set()

    def _send(self, kind: int, ident: int, payload: bytes = b"") -> None:
        assert self._channel is not None
        self._channel.send(wire.encode(kind, ident, payload))

    def _accept(self, ident: int, payload: bytes) -> None:
        try:
            fn, arglist, kwargs, timeout, star = pickle.loads(payload)
        except Exception as exc:
            message = f"the task could not be unpickled in the worker: {exc!r}"
            self._send(
                wire.RESULT, ident, pickle.dumps(([], (wire.ERR_PICKLING, message, ""), 0.0))
            )
            return
        try:
            is_async = self._is_async[fn]
        except (KeyError, TypeError):
            is_async = inspect.iscoroutinefunction(fn)
            with contextlib.suppress(TypeError):
                if len(self._is_async) > 256:
                    self._is_async.clear()
                self._is_async[fn] = is_async
        if is_async:
            task = asyncio.get_running_loop().create_task(
                self._run_async(fn, arglist, kwargs, timeout, star)
            )
            self._async_jobs[ident] = task
            task.add_done_callback(lambda t: self._async_done(ident, t))
        else:
            self._sync_jobs.append((ident, fn, arglist, kwargs, timeout, star))
            self._queued.add(ident)
            self._wakeup.set()

    # -- plain functions ---------------------------------------------------

    async def _run_sync_jobs(self) -> None:
        jobs = self._sync_jobs
        while True:
            if not jobs:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = time.perf_counter() + _SYNC_SLICE
            while jobs:
                ident, fn, arglist, kwargs, timeout, star = jobs.popleft()
                self._queued.discard(ident)
                if ident in self._cancelled:
                    self._cancelled.discard(ident)
                    self._send(wire.CANCELLED, ident)
                    continue
                if timeout is not None:
                    # Out before the call: the pool's backstop timer starts now.
                    self._send(wire.STARTED, ident)
                    assert self._channel is not None
                    self._channel.flush_now()
                self._send(wire.RESULT, ident, self._run_sync(fn, arglist, kwargs, timeout, star))
                if time.perf_counter() > deadline:
                    break
            # Let replies leave and new frames (cancellations) arrive.
            await asyncio.sleep(0)

    def _run_sync(
        self,
        fn: Callable[..., Any],
        arglist: list[Any],
        kwargs: dict[str, Any] | None,
        timeout: float | None,
        star: bool,
    ) -> bytes:
        results: list[Any] = []
        append = results.append
        error: Error | None = None
        start = time.perf_counter()
        try:
            if timeout is not None:
                for item in arglist:
                    args = item if star else (item,)
                    append(_call_with_alarm(fn, args, kwargs or {}, timeout))
            elif kwargs:
                for args in arglist:
                    append(fn(*args, **kwargs))
            elif star:
                for args in arglist:
                    append(fn(*args))
            else:
                for item in arglist:
                    append(fn(item))
        except Exception as exc:
            error = pack_exception(exc, fn)
        return _finish(fn, results, error, time.perf_counter() - start)

    # -- coroutine functions -----------------------------------------------

    async def _run_async(
        self,
        fn: Callable[..., Any],
        arglist: list[Any],
        kwargs: dict[str, Any] | None,
        timeout: float | None,
        star: bool,
    ) -> bytes:
        start = time.perf_counter()
        kw = kwargs or {}
        calls = [self._call_async(fn, item if star else (item,), kw, timeout) for item in arglist]
        results: list[Any] = []
        error: Error | None = None
        if len(calls) == 1:
            try:
                results.append(await calls[0])
            except Exception as exc:
                error = pack_exception(exc, fn)
        else:
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    error = pack_exception(outcome, fn)
                    break
                results.append(outcome)
        return _finish(fn, results, error, time.perf_counter() - start)

    async def _call_async(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        async with self._sem:
            if timeout is None:
                return await fn(*args, **kwargs)
            cm = asyncio.timeout(timeout)
            try:
                async with cm:
                    return await fn(*args, **kwargs)
            except TimeoutError:
                if cm.expired():
                    message = f"{describe(fn)} exceeded its timeout of {timeout:g} s"
                    raise TaskTimeoutError(message) from None
                raise

    def _async_done(self, ident: int, task: asyncio.Task[bytes]) -> None:
        del self._async_jobs[ident]
        if task.cancelled():
            self._send(wire.CANCELLED, ident)
        else:
            self._send(wire.RESULT, ident, task.result())


def _finish(fn: object, results: list[Any], error: Error | None, elapsed: float) -> bytes:
    try:
        return pickle.dumps((results, error, elapsed), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    # Find the first result that cannot cross; keep the ones before it.
    good: list[Any] = []
    problem: Exception | None = None
    for result in results:
        try:
            pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            problem = exc
            break
        good.append(result)
    message = f"a result could not be pickled: {problem!r}"
    return pickle.dumps((good, (wire.ERR_PICKLING, message, ""), elapsed))
