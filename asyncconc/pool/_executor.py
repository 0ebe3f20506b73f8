"""``concurrent.futures.Executor`` faces over a LoopPool's workers.

:class:`PoolExecutor` (from :meth:`LoopPool.executor`) is a face on an open
pool: calls go into the same queue and workers as ``await pool.submit``.
:class:`LoopPoolExecutor` is the synchronous entry point: it runs a
LoopPool on an event loop in a thread of its own, for code that has no
loop, and owns it.

Both behave as the ``concurrent.futures`` documentation says: ``submit``
returns a :class:`~concurrent.futures.Future`, usable from any thread, with
``cf.wait``/``as_completed`` and with ``loop.run_in_executor``; ``map``
submits everything at once, chunks by ``chunksize`` and raises
:class:`TimeoutError` when a result is not there ``timeout`` seconds after
the call; ``shutdown(wait=, cancel_futures=)``; a context manager.
``Future.cancel()`` succeeds while the call has not been handed to a worker
(the Future is marked running at hand-over). Errors are the pool's: a
``submit`` after shutdown raises :class:`PoolClosedError` (a
``RuntimeError``, as the stdlib raises); a broken pool raises
:class:`BrokenPoolError` and a dead worker :class:`WorkerCrashedError` (both
``BrokenProcessPool``); a timeout raises :class:`TaskTimeoutError` (a
``TimeoutError``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from asyncconc._errors import PoolClosedError, PoolError
from asyncconc.pool._scheduler import Job, Outcome

if TYPE_CHECKING:
    from asyncconc.pool._api import LoopPool, StartMethod

__all__ = ["LoopPoolExecutor", "PoolExecutor"]

P = ParamSpec("P")
T = TypeVar("T")


class PoolExecutor(cf.Executor):
    """A ``concurrent.futures.Executor`` over an open :class:`LoopPool`.

    Thread-safe. ``shutdown`` refuses new calls and, with ``wait=True``,
    waits for this executor's calls (not the pool's others); it never closes
    the pool, which its ``async with`` block owns. Waiting from the pool's
    own event-loop thread would deadlock, so ``shutdown(wait=True)`` there
    raises :class:`PoolError` while calls are outstanding.
    """

    def __init__(self, pool: LoopPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._lock = threading.Lock()
        self._closed = False
        self._futures: set[cf.Future[Any]] = set()

    @overload
    def submit(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> cf.Future[T]: ...

    @overload
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> cf.Future[T]: ...

    def submit(self, fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> cf.Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; return a Future of its result."""
        future: cf.Future[Any] = self._new_future()
        self._in_loop(self._start, future, fn, [args], kwargs or None, False)
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """``fn(*args)`` for the zipped ``iterables``, in order, as ``Executor.map``.

        Every call is submitted before this returns; ``chunksize`` calls
        travel together. ``next()`` raises :class:`TimeoutError` once
        ``timeout`` seconds have passed since the call to ``map``, and the
        first exception of a call; closing the iterator early cancels the
        calls not yet handed to a worker.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else time.monotonic() + timeout
        calls = list(zip(*iterables, strict=False))
        futures: list[cf.Future[list[T]]] = []
        for low in range(0, len(calls), chunksize):
            future: cf.Future[list[T]] = self._new_future()
            self._in_loop(self._start, future, fn, calls[low : low + chunksize], None, True)
            futures.append(future)
        return self._results(futures, end)

    def _results(self, futures: list[cf.Future[list[T]]], end: float | None) -> Iterator[T]:
        futures.reverse()
        try:
            while futures:
                future = futures[-1]
                left = None if end is None else max(0.0, end - time.monotonic())
                yield from future.result(left)
                futures.pop()
        finally:
            for future in futures:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                future.cancel()
        if wait and futures:
            if self._on_loop_thread() and any(not f.done() for f in futures):
                raise PoolError(
                    "shutdown(wait=True) on the pool's own event-loop thread would deadlock; "
                    "use wait=False, or await the calls"
                )
            cf.wait(futures)

    # -- internals -------------------------------------------------------------

    def _new_future(self) -> cf.Future[Any]:
        broken = self._pool._broken()
        with self._lock:
            if self._closed:
                raise PoolClosedError("cannot schedule new futures after shutdown")
            if broken is not None:
                raise type(broken)(str(broken)) from broken.__cause__
            future: cf.Future[Any] = cf.Future()
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: cf.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _on_loop_thread(self) -> bool:
        with contextlib.suppress(RuntimeError):
            return asyncio.get_running_loop() is self._loop
        return False

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if self._on_loop_thread():
            fn(*args)
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            future: cf.Future[Any] = args[0]
            future.cancel()
            raise PoolClosedError("the pool is closed") from None

    def _start(
        self,
        future: cf.Future[Any],
        fn: Callable[..., Any],
        arglist: list[Any],
        kwargs: dict[str, Any] | None,
        many: bool,
    ) -> None:
        """On the loop: turn the call into a job of the pool."""
        if future.done():  # cancelled before it got here
            return
        pool = self._pool
        try:
            job = pool._new_job(fn, arglist, kwargs, pool._task_timeout, True)
        except Exception as exc:
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)
            return
        job.claim = lambda: future.running() or future.set_running_or_notify_cancel()
        job.future.add_done_callback(lambda _: _settle(future, job, many))
        future.add_done_callback(lambda f: self._cancelled(f, job))
        pool._enqueue(job)

    def _cancelled(self, future: cf.Future[Any], job: Job) -> None:
        if future.cancelled():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._pool._abandon, job)


def _settle(future: cf.Future[Any], job: Job, many: bool) -> None:
    if future.done():
        return
    if job.future.cancelled():
        if not future.cancel():
            future.set_exception(PoolClosedError("the call was cancelled in the pool"))
        return
    outcome: Outcome = job.future.result()
    results, error, _ = outcome
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(results if many else results[0])


class LoopPoolExecutor(PoolExecutor):
    """A ``ProcessPoolExecutor`` look-alike running a :class:`LoopPool` in its own thread.

    The synchronous entry point: no event loop needed. ``max_workers``,
    ``initializer``, ``initargs`` and ``max_tasks_per_child`` mean what they
    mean for ``ProcessPoolExecutor``; the other keywords are LoopPool's.
    The pool starts here (raising what :class:`LoopPool` raises on entry);
    ``shutdown`` closes it: ``wait=True`` waits for the calls and the
    workers' exit, ``wait=False`` lets them finish in the background. The
    workers die with this executor's thread, so with this process.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_child: int | None = None,
        concurrency: int = 16,
        retries: int = 0,
        task_timeout: float | None = None,
        init_timeout: float = 60.0,
        loop: str = "auto",
        start_method: StartMethod | None = None,
    ) -> None:
        from asyncconc._runner import loop_factory
        from asyncconc.pool._api import LoopPool

        pool = LoopPool(
            max_workers,
            concurrency=concurrency,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_worker=max_tasks_per_child,
            retries=retries,
            task_timeout=task_timeout,
            init_timeout=init_timeout,
            loop=loop,
            start_method=start_method,
        )
        self._runner = asyncio.Runner(loop_factory=loop_factory(loop))
        started: cf.Future[asyncio.AbstractEventLoop] = cf.Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._serve, args=(pool, started), name="LoopPoolExecutor", daemon=True
        )
        self._thread.start()
        super().__init__(pool, started.result())

    def _serve(self, pool: LoopPool, started: cf.Future[asyncio.AbstractEventLoop]) -> None:
        with self._runner as runner:
            runner.run(self._own(pool, started))

    async def _own(self, pool: LoopPool, started: cf.Future[asyncio.AbstractEventLoop]) -> None:
        stop = self._stop = asyncio.Event()
        try:
            await pool.__aenter__()
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(asyncio.get_running_loop())
        try:
            await stop.wait()
        except BaseException:
            await pool.__aexit__(None, None, None)
            raise
        await pool.aclose()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=cancel_futures)
        stop = self._stop
        if stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # its loop has already finished
                self._loop.call_soon_threadsafe(stop.set)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()
