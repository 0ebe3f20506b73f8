"""The worker process: plain functions on its main thread, coroutines on a loop.

:func:`main` runs in a process forked by the pool's fork server (or spawned).
It ignores SIGINT (Ctrl-C in a terminal reaches the whole process group; the
pool decides when workers stop); the kernel kills it when its parent dies
(see :mod:`asyncconc.pool._forkserver`). It reads its
:class:`WorkerConfig` from the socket, runs the initializer on the main
thread (awaiting what it returns, if awaitable, on the loop), then serves:

* the **event-loop thread** owns the socket (an :class:`asyncio.Runner`,
  uvloop when installed) and runs coroutine functions as tasks, at most
  ``concurrency`` at once;
* the **main thread** runs plain functions one at a time, in order, as
  ``ProcessPoolExecutor`` does: a plain function may call ``asyncio.run()``,
  SIGALRM (which only the main thread receives) interrupts it at its
  timeout, and coroutine tasks keep running meanwhile (between the GIL
  switches of the plain function). A plain callable whose call returns an
  awaitable (an object with ``async def __call__``, a function returning a
  coroutine) has it awaited on the loop.

The worker tells the pool when it starts each coroutine job (STARTED) and,
for a plain-function job with a timeout, when calls finish (PROGRESS, at most
every 50 ms): the pool enforces every timeout itself from those signs of life and
kills a worker that stops giving them (see ``_scheduler``). The worker's own
timeouts (``asyncio.timeout``, SIGALRM) give the clean
:class:`TaskTimeoutError` and keep the worker alive when the call can be
interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import pickle
import queue
import signal
import socket
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from asyncconc._errors import PicklingError, TaskTimeoutError
from asyncconc._runner import loop_factory
from asyncconc.pool import _protocol as wire

__all__ = ["WorkerConfig", "describe", "is_coroutine_callable", "main", "pack_exception"]

# How often a long plain-function job reports progress, at most.
_PROGRESS_EVERY = 0.05

Error = tuple[int, Any, str]
_SyncJob = tuple[int, Callable[..., Any], list[Any], "dict[str, Any] | None", "float | None", bool]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int
    initializer: Callable[..., Any] | None
    initargs: tuple[Any, ...]
    loop: str
    preload: tuple[str, ...] = ()


def describe(fn: object) -> str:
    """A short name for a callable in error messages: ``module.qualname``."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        inner = getattr(fn, "func", None)  # functools.partial
        if inner is not None:
            return f"partial({describe(inner)})"
        kind = type(fn)
        return f"{kind.__module__}.{kind.__qualname__} instance"
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else str(name)


def is_coroutine_callable(fn: object) -> bool:
    """A coroutine function, a partial of one, or an object with ``async __call__``."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = type(fn).__dict__.get("__call__") if not inspect.isfunction(fn) else None
    return inspect.iscoroutinefunction(call)


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


def main(conn: socket.socket) -> None:
    """Process target: read the config, initialise, serve until STOP or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    conn.setblocking(True)
    wire.tune(conn)
    kind, _, payload = _read_frame(conn)
    if kind != wire.CONFIG:
        return
    config: WorkerConfig = wire.loads(payload)
    _Worker(config, conn).run()


def _read_frame(conn: socket.socket) -> wire.Frame:
    header = _recv_exactly(conn, wire.HEADER.size)
    length, ident, kind = wire.HEADER.unpack(header)
    return kind, ident, _recv_exactly(conn, length)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = conn.recv_into(view[got:])
        if n == 0:
            os._exit(0)  # the pool is gone before we started
        got += n
    return bytes(buffer)


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
    def __init__(self, config: WorkerConfig, conn: socket.socket) -> None:
        self._config = config
        self._conn = conn
        self._plain: queue.SimpleQueue[_SyncJob | None] = queue.SimpleQueue()
        self._queued: set[int] = set()  # plain-function jobs not started yet
        self._cancelled: set[int] = set()  # ... of which these were cancelled
        self._async_jobs: dict[int, asyncio.Task[None]] = {}
        self._returns_awaitable: set[Callable[..., Any]] = set()
        self._is_async: dict[Callable[..., Any], bool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: wire.Channel | None = None
        self._sem: asyncio.Semaphore | None = None
        self._plain_done: asyncio.Event | None = None
        # Frames from the main thread, sent by the loop in batches.
        self._posted: list[wire.Pieces] = []
        self._post_lock = threading.Lock()
        self._post_scheduled = False

    # -- start and stop -------------------------------------------------------

    def run(self) -> None:
        pending: Awaitable[Any] | None = None
        init = self._config.initializer
        if init is not None:
            try:
                result = init(*self._config.initargs)
            except Exception as exc:
                self._init_failed(exc)
                return
            if inspect.isawaitable(result):
                pending = result
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run_loop, args=(pending, ready), name="pool-loop", daemon=True
        )
        thread.start()
        ready.wait()
        if self._loop is not None:
            self._serve_plain()
        thread.join()

    def _init_failed(self, exc: BaseException) -> None:
        _, blob, text = pack_exception(exc, self._config.initializer)
        self._conn.setblocking(True)
        with contextlib.suppress(OSError):
            self._conn.sendall(
                b"".join(wire.encode(wire.INIT_FAILED, 0, pickle.dumps((blob, text))))
            )

    def _run_loop(self, pending: Awaitable[Any] | None, ready: threading.Event) -> None:
        try:
            with asyncio.Runner(loop_factory=loop_factory(self._config.loop)) as runner:
                runner.run(self._serve(pending, ready))
        finally:
            ready.set()
            self._plain.put(None)

    async def _serve(self, pending: Awaitable[Any] | None, ready: threading.Event) -> None:
        if pending is not None:
            try:
                await pending
            except Exception as exc:
                self._init_failed(exc)
                return
        loop = self._loop = asyncio.get_running_loop()
        self._sem = asyncio.Semaphore(self._config.concurrency)
        stopping = self._stopping = asyncio.Event()
        self._plain_done = asyncio.Event()
        channel = self._channel = wire.Channel(
            loop, self._conn, self._on_frames, self._on_parent_gone
        )
        ready.set()
        channel.send(wire.encode(wire.READY, 0, str(os.getpid()).encode()))
        try:
            await stopping.wait()
            self._plain.put(None)
            await self._plain_done.wait()
            while self._async_jobs:
                await asyncio.wait(list(self._async_jobs.values()))
            self._send_posted()
            await channel.drain()
        finally:
            channel.close()

    def _on_parent_gone(self) -> None:
        # The pool closed our socket without STOP (terminate) or died: nobody
        # is left to take results, so leave now, abandoning running calls.
        os._exit(0)

    # -- frames ------------------------------------------------------------------

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
                self._stopping.set()

    def _send(self, kind: int, ident: int, payload: bytes | wire.Pieces = b"") -> None:
        assert self._channel is not None
        self._channel.send(wire.encode(kind, ident, payload))

    def _post(self, kind: int, ident: int, payload: bytes | wire.Pieces = b"") -> None:
        """From the main thread: send a frame via the loop (batched)."""
        frame = wire.encode(kind, ident, payload)
        with self._post_lock:
            self._posted.append(frame)
            if self._post_scheduled:
                return
            self._post_scheduled = True
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop has closed: we are leaving
            self._loop.call_soon_threadsafe(self._send_posted)

    def _send_posted(self) -> None:
        with self._post_lock:
            frames, self._posted = self._posted, []
            self._post_scheduled = False
        assert self._channel is not None
        for frame in frames:
            self._channel.send(frame)

    def _accept(self, ident: int, payload: bytes | memoryview) -> None:
        try:
            fn, arglist, kwargs, timeout, star = wire.loads(payload)
        except Exception as exc:
            message = f"the task could not be unpickled in the worker: {exc!r}"
            self._send(wire.RESULT, ident, wire.dumps(([], (wire.ERR_PICKLING, message, ""), 0.0)))
            return
        if self._coroutine_callable(fn):
            self._start_async((ident, fn, arglist, kwargs, timeout, star), [], [])
        else:
            self._queued.add(ident)
            self._plain.put((ident, fn, arglist, kwargs, timeout, star))

    def _coroutine_callable(self, fn: Callable[..., Any]) -> bool:
        try:
            return self._is_async[fn] or fn in self._returns_awaitable
        except (KeyError, TypeError):
            pass
        is_async = is_coroutine_callable(fn)
        with contextlib.suppress(TypeError):
            if len(self._is_async) > 256:
                self._is_async.clear()
            self._is_async[fn] = is_async
        return is_async

    def _start_async(self, job: _SyncJob, first: list[Awaitable[Any]], done: list[Any]) -> None:
        assert self._loop is not None
        ident = job[0]
        task = self._loop.create_task(self._run_async(job, first, done))
        self._async_jobs[ident] = task
        task.add_done_callback(lambda t: self._async_done(ident, t))

    # -- plain functions (main thread) -------------------------------------------

    def _serve_plain(self) -> None:
        get = self._plain.get
        while (job := get()) is not None:
            ident = job[0]
            self._queued.discard(ident)
            if ident in self._cancelled:
                self._cancelled.discard(ident)
                self._post(wire.CANCELLED, ident)
                continue
            # No STARTED for plain jobs: they run in order, so the pool takes
            # the oldest it handed over for started (a crash then follows the
            # retry rules) and the others for not started. A STARTED frame,
            # batched, could be lost with a SIGKILL and the pool re-ran a
            # started call; sent synchronously, it cost a loop wake-up per job.
            payload = self._run_sync(job)
            if payload is not None:
                self._post(wire.RESULT, ident, payload)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._plain_finished)

    def _plain_finished(self) -> None:
        assert self._plain_done is not None
        self._plain_done.set()

    def _run_sync(self, job: _SyncJob) -> wire.Pieces | None:
        ident, fn, arglist, kwargs, timeout, star = job
        results: list[Any] = []
        append = results.append
        error: Error | None = None
        start = time.perf_counter()
        kw = kwargs or {}
        try:
            if timeout is not None:
                reported = start
                for index, item in enumerate(arglist):
                    args = item if star else (item,)
                    result = _call_with_alarm(fn, args, kw, timeout)
                    if inspect.isawaitable(result):
                        self._move_to_loop(job, results, result, index)
                        return None
                    append(result)
                    now = time.perf_counter()
                    if now - reported > _PROGRESS_EVERY:
                        reported = now
                        self._post(wire.PROGRESS, ident)
            else:
                for index, item in enumerate(arglist):
                    result = fn(*item, **kw) if star else fn(item, **kw)
                    if inspect.isawaitable(result):
                        self._move_to_loop(job, results, result, index)
                        return None
                    append(result)
        except Exception as exc:
            error = pack_exception(exc, fn)
        return _finish(fn, results, error, time.perf_counter() - start)

    def _move_to_loop(
        self,
        job: _SyncJob,
        results: list[Any],
        awaitable: Awaitable[Any],
        index: int,
    ) -> None:
        """The call returned an awaitable: the loop awaits it and runs the rest."""
        ident, fn, arglist, kwargs, timeout, star = job
        with contextlib.suppress(TypeError):
            self._returns_awaitable.add(fn)
        rest = (ident, fn, arglist[index + 1 :], kwargs, timeout, star)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._start_async, rest, [awaitable], results)

    # -- coroutine functions (loop thread) -----------------------------------------

    async def _run_async(
        self, job: _SyncJob, first: list[Awaitable[Any]], results: list[Any]
    ) -> None:
        ident, fn, arglist, kwargs, timeout, star = job
        self._send(wire.STARTED, ident)
        start = time.perf_counter()
        kw = kwargs or {}
        calls = [self._await(aw, timeout) for aw in first]
        calls += [self._call_async(fn, item if star else (item,), kw, timeout) for item in arglist]
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
                    if not isinstance(outcome, Exception):
                        raise outcome
                    error = pack_exception(outcome, fn)
                    break
                results.append(outcome)
        payload = _finish(fn, results, error, time.perf_counter() - start)
        self._send(wire.RESULT, ident, payload)

    async def _call_async(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        assert self._sem is not None
        async with self._sem:
            if timeout is None:
                result = fn(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result
            cm = asyncio.timeout(timeout)
            try:
                async with cm:
                    result = fn(*args, **kwargs)
                    return await result if inspect.isawaitable(result) else result
            except TimeoutError:
                if cm.expired():
                    message = f"{describe(fn)} exceeded its timeout of {timeout:g} s"
                    raise TaskTimeoutError(message) from None
                raise

    async def _await(self, awaitable: Awaitable[Any], timeout: float | None) -> Any:
        if timeout is None:
            return await awaitable
        cm = asyncio.timeout(timeout)
        try:
            async with cm:
                return await awaitable
        except TimeoutError:
            if cm.expired():
                raise TaskTimeoutError(
                    f"an awaitable exceeded its timeout of {timeout:g} s"
                ) from None
            raise

    def _async_done(self, ident: int, task: asyncio.Task[None]) -> None:
        del self._async_jobs[ident]
        if task.cancelled():
            self._send(wire.CANCELLED, ident)


def _finish(fn: object, results: list[Any], error: Error | None, elapsed: float) -> wire.Pieces:
    try:
        return wire.dumps((results, error, elapsed))
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
    return wire.dumps((good, (wire.ERR_PICKLING, message, ""), elapsed))
