"""What runs inside each Dask worker process for :class:`DaskPool`.

Imported only by Dask workers (and lazily by :mod:`asyncconc.pool._dask`),
never by ``import asyncconc``: it imports ``distributed``.

:class:`LoopPlugin` is a worker plugin that starts an event loop of
asyncconc's own (uvloop when installed) in a thread of the worker. Coroutine
chunks run there, not on Dask's control loop: measured, a coroutine on
Dask's loop holds a thread slot and one blocking call in it stalled the
worker's heartbeats (an ``inc`` on a free thread took 7.5 s during an 8 s
``time.sleep``); on a loop of our own, 2,000 x ``sleep(0.05)`` took 3.34 s
on 2 workers (ideal 3.125 s) and other tasks kept 6-11 ms latency.

:func:`run_chunk` is the one function the scheduler ever sees. Its
argument is the user's ``(fn, args)`` pickled by asyncconc, so the
scheduler (which unpickles task specs) needs asyncconc installed but not
the user's code. It returns pickled ``(results, error, elapsed)``: a task's
exception travels as data, as in :class:`LoopPool`, never as a Dask error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import inspect
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from asyncconc._errors import PicklingError, TaskTimeoutError
from asyncconc._runner import loop_factory
from asyncconc.pool import _protocol as wire
from asyncconc.pool._dask_chunks import INIT_FAILED
from asyncconc.pool._worker import describe, pack_exception

__all__ = ["INIT_FAILED", "LoopPlugin", "cancel_tokens", "run_chunk"]

_CANCELLED_MEMORY = 10_000


class _Interrupted(BaseException):
    """Raised into a worker thread whose plain call overran its timeout.

    A BaseException so that a bare ``except Exception`` in user code does not
    swallow it.
    """


class LoopPlugin(WorkerPlugin):  # type: ignore[misc,unused-ignore]  # Any without distributed's stubs
    """An event loop thread per worker, the initializer, and cancellation."""

    def __init__(self, name: str, loop: str, concurrency: int, init: bytes | None) -> None:
        self.name = name
        self._loop_kind = loop
        self._concurrency = concurrency
        self._init = init
        self.init_error: tuple[bytes, str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "_loop_kind", "_concurrency", "_init")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.init_error = None

    def setup(self, worker: Any) -> None:
        ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop = loop_factory(self._loop_kind)()
        self.tasks: dict[str, asyncio.Task[bytes]] = {}
        self.cancelled: set[str] = set()
        self._cancel_order: deque[str] = deque()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name=f"{self.name}-loop", daemon=True
        )
        self._thread.start()
        ready.wait()
        self.semaphore: asyncio.Semaphore = asyncio.run_coroutine_threadsafe(
            _make_semaphore(self._concurrency), self.loop
        ).result()
        if self._init is not None:
            self._initialize(self._init)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        try:
            self.loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    def _initialize(self, blob: bytes) -> None:
        fn: Any = None
        try:
            fn, args = pickle.loads(blob)
            result = fn(*args)
            if inspect.isawaitable(result):
                asyncio.run_coroutine_threadsafe(_awaited(result), self.loop).result()
        except Exception as exc:
            _, data, text = pack_exception(exc, fn)
            self.init_error = (data, text)

    def teardown(self, worker: Any) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)

    def cancel(self, tokens: list[str]) -> None:
        """Cancel these chunks: running coroutines now, queued chunks when they start."""
        with self._lock:
            for token in tokens:
                if token not in self.cancelled:
                    self.cancelled.add(token)
                    self._cancel_order.append(token)
            while len(self._cancel_order) > _CANCELLED_MEMORY:
                self.cancelled.discard(self._cancel_order.popleft())
        self.loop.call_soon_threadsafe(self._cancel_tasks, tokens)

    def _cancel_tasks(self, tokens: list[str]) -> None:
        for token in tokens:
            task = self.tasks.get(token)
            if task is not None:
                task.cancel()


async def _make_semaphore(value: int) -> asyncio.Semaphore:
    return asyncio.Semaphore(value)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _awaited_within(awaitable: Any, timeout: float | None, fn: object) -> Any:
    if timeout is None:
        return await awaitable
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError as exc:
        raise TaskTimeoutError(f"{describe(fn)} exceeded its timeout of {timeout:g} s") from exc


def cancel_tokens(name: str, tokens: list[str], dask_worker: Any = None) -> None:
    """Run by ``Client.run`` on every worker: cancel the pool's chunks there."""
    plugin = (dask_worker or get_worker()).plugins.get(name)
    if isinstance(plugin, LoopPlugin):
        plugin.cancel(tokens)


def run_chunk(name: str, token: str, payload: bytes) -> bytes:
    """Run one chunk of calls in this worker; pickled ``(results, error, elapsed)``."""
    plugin = get_worker().plugins[name]
    assert isinstance(plugin, LoopPlugin)
    if plugin.init_error is not None:
        return pickle.dumps(([], (INIT_FAILED, *plugin.init_error), 0.0))
    if token in plugin.cancelled:
        return pickle.dumps(([], None, 0.0))
    try:
        fn, arglist, kwargs, timeout, is_async = pickle.loads(payload)
    except Exception as exc:
        error = (wire.ERR_PICKLING, f"could not be unpickled in the worker: {exc!r}", "")
        return pickle.dumps(([], error, 0.0))
    start = time.perf_counter()
    if is_async:
        future = asyncio.run_coroutine_threadsafe(
            _async_chunk(plugin, token, fn, arglist, kwargs or {}, timeout), plugin.loop
        )
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            return pickle.dumps(([], None, 0.0))
    if timeout is not None:
        # Starts the caller's backstop for calls our interruption cannot reach.
        get_worker().log_event(f"{name}-started", token)
    results, error = _plain_chunk(plugin, token, fn, arglist, kwargs or {}, timeout)
    return _pack(results, error, time.perf_counter() - start, fn)


def _pack(results: list[Any], error: Any, elapsed: float, fn: object) -> bytes:
    try:
        return pickle.dumps((results, error, elapsed), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        message = f"a result of {describe(fn)} could not be pickled: {exc!r}"
        blob = pickle.dumps(PicklingError(message))
        return pickle.dumps(([], (wire.ERR_RAISED, blob, message), elapsed))


async def _async_chunk(
    plugin: LoopPlugin,
    token: str,
    fn: Callable[..., Any],
    arglist: list[tuple[Any, ...]],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> bytes:
    async def one(args: tuple[Any, ...]) -> Any:
        async with plugin.semaphore:
            return await _awaited_within(fn(*args, **kwargs), timeout, fn)

    start = time.perf_counter()
    task = asyncio.current_task()
    assert task is not None
    plugin.tasks[token] = task
    try:
        outcomes = await asyncio.gather(*(one(args) for args in arglist), return_exceptions=True)
    finally:
        del plugin.tasks[token]
    results: list[Any] = []
    error = None
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            error = pack_exception(outcome, fn)
            break
        results.append(outcome)
    return _pack(results, error, time.perf_counter() - start, fn)


def _plain_chunk(
    plugin: LoopPlugin,
    token: str,
    fn: Callable[..., Any],
    arglist: list[tuple[Any, ...]],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> tuple[list[Any], Any]:
    results: list[Any] = []
    for args in arglist:
        if token in plugin.cancelled:
            return results, None
        try:
            if timeout is None:
                result = fn(*args, **kwargs)
            else:
                result = _call_bounded(fn, args, kwargs, timeout)
            if inspect.isawaitable(result):
                # A plain callable that returned an awaitable (as LoopPool,
                # await it): on the worker's loop, this thread waits for it.
                result = asyncio.run_coroutine_threadsafe(
                    _awaited_within(result, timeout, fn), plugin.loop
                ).result()
            results.append(result)
        except _Interrupted:
            message = f"{describe(fn)} exceeded its timeout of {timeout:g} s"
            return results, pack_exception(TaskTimeoutError(message), fn)
        except Exception as exc:
            return results, pack_exception(exc, fn)
    return results, None


def _call_bounded(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
) -> Any:
    """``fn(*args)`` in this Dask thread, interrupted after ``timeout`` seconds.

    A Dask worker thread is not the main thread, so SIGALRM (what LoopPool
    uses) cannot reach it; instead a timer raises :class:`_Interrupted` in
    this thread (``PyThreadState_SetAsyncExc``). That interrupts Python code
    between bytecodes and so frees the thread slot; a call blocked in C code
    (``time.sleep``, a C extension) is interrupted only when it returns.
    """
    ident = threading.get_ident()
    lock = threading.Lock()
    armed = [True]

    def fire() -> None:
        with lock:
            if armed[0]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(_Interrupted)
                )

    def disarm() -> None:
        with lock:
            armed[0] = False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        timer.cancel()

    timer = threading.Timer(timeout, fire)
    timer.daemon = True
    timer.start()
    try:
        try:
            return fn(*args, **kwargs)
        finally:
            disarm()
    except _Interrupted:
        disarm()
        raise
