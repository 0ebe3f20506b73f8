"""LoopPool: worker processes, each with its own event loop, driven from yours.

The caller's loop talks to every worker over one socket (see
:mod:`asyncconc.pool._protocol`), watched with ``add_reader`` together with
the process sentinel, so waiting never blocks the loop and a worker's death
is seen the moment it happens.

Start method: ``forkserver`` where the platform has it, else ``spawn``; never
plain ``fork``. Forking a process that already runs an event loop, threads or
an open HTTP session copies locks held by other threads and the loop's
file descriptors into the child, which then deadlocks or steals wake-ups
(see the CPython docs on start methods and bpo-6721). The fork server is a
small single-threaded process started once per program, with the worker
module and the program's main module preloaded, so a new worker is a cheap
``fork`` of a clean process: about 5 ms instead of the ~200 ms a spawned
interpreter needs to import asyncconc. That keeps pool start-up (after the
first) and worker replacement fast. Measured here: first result 0.05 s with
the fork server up, 0.2-0.4 s from a fresh interpreter, most of it the
fork server importing ``asyncconc`` (aiohttp alone is ~110 ms).

Worker processes, dispatch and crash handling live in
:mod:`asyncconc.pool._scheduler`; this module turns calls into jobs and
owns the pool's life cycle.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import itertools
import multiprocessing
import multiprocessing.context
import operator
import os
import pickle
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from itertools import islice
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from asyncconc._errors import (
    PicklingError,
    PoolClosedError,
    PoolError,
)
from asyncconc._runner import resolve_loop
from asyncconc.pool._scheduler import Context, Job, Launched, Outcome, Scheduler, kill_launched
from asyncconc.pool._worker import WorkerConfig, describe

__all__ = ["LoopPool"]

P = ParamSpec("P")
T = TypeVar("T")

StartMethod = Literal["forkserver", "spawn"]

# Automatic chunks for plain functions aim at this much work each.
_TARGET_CHUNK_SECONDS = 0.005
_MAX_CHUNK = 4096


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LoopPool:
    """A pool of worker processes, each running its own event loop.

    Use it as an async context manager, from the event loop that entered
    it (it is not thread-safe)::

        async with LoopPool() as pool:
            total = sum([s async for s in pool.starmap(partial_sum, ranges)])

    ``workers`` defaults to the number of CPUs this process may run on
    (``os.sched_getaffinity``). Plain functions run one at a time per worker;
    coroutine functions run up to ``concurrency`` at once per worker, through
    the same :meth:`submit`, :meth:`map` and :meth:`starmap`.

    ``initializer(*initargs)`` (plain or coroutine function) runs once in
    every worker before its first task; if it raises, the pool breaks and
    every task fails with :class:`PoolError` caused by that exception.
    ``max_tasks_per_worker`` retires a worker after that many tasks (a map
    chunk is never split, so a worker may run one chunk past it) and starts a
    fresh one. ``retries`` is how many more times a task runs when the worker
    running it dies. ``task_timeout`` (seconds) bounds each call, as does the
    ``timeout`` of :meth:`map` and :meth:`starmap`; an overrun raises
    :class:`TaskTimeoutError` in the caller and the worker lives on, unless
    the call sits in C code deaf to SIGALRM: then its worker is killed and
    replaced once the timeout is 2 s past.

    Errors: a task's exception is re-raised as itself with the worker's
    traceback attached as a note; an argument or result that cannot be
    pickled raises :class:`PicklingError` naming the function; a worker that
    dies is replaced at once and the tasks it held fail with
    :class:`WorkerCrashedError` (or run again, up to ``retries``).

    Shutdown: leaving the block normally waits for outstanding tasks, then
    stops the workers; leaving it with an exception, including cancellation
    and Ctrl-C, kills them at once. :meth:`terminate` kills them now. Workers
    never outlive this process: each dies with its parent (Linux
    ``PR_SET_PDEATHSIG``) and watches a socket only this process holds.
    See the module docstring for the start method. As with any non-fork
    start method, functions must be importable by name (module level, not
    lambdas or closures) and the main script must guard its entry point
    with ``if __name__ == "__main__":``, since workers import it.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        concurrency: int = 16,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_worker: int | None = None,
        retries: int = 0,
        task_timeout: float | None = None,
        loop: str = "auto",
        start_method: StartMethod | None = None,
        shutdown_timeout: float = 10.0,
    ) -> None:
        size = default_workers() if workers is None else workers
        if size < 1:
            raise ValueError(f"workers must be at least 1, not {size}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if max_tasks_per_worker is not None and max_tasks_per_worker < 1:
            raise ValueError(f"max_tasks_per_worker must be at least 1, not {max_tasks_per_worker}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        if task_timeout is not None and not task_timeout > 0:
            raise ValueError(f"task_timeout must be positive, not {task_timeout}")
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        self._size = size
        self._concurrency = concurrency
        self._max_tasks = max_tasks_per_worker
        self._retries = retries
        self._task_timeout = task_timeout
        self._shutdown_timeout = shutdown_timeout
        self._start_method: StartMethod = start_method
        self._config = WorkerConfig(concurrency, initializer, tuple(initargs), resolve_loop(loop))
        self._state = _State.NEW
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: Scheduler | None = None
        self._fn_cache: dict[Callable[..., Any], tuple[str, bool]] = {}

    @property
    def workers(self) -> int:
        """How many worker processes the pool keeps running."""
        return self._size

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        return [] if self._scheduler is None else self._scheduler.worker_pids()

    # -- life cycle ----------------------------------------------------------

    async def __aenter__(self) -> LoopPool:
        if self._state is not _State.NEW:
            raise PoolClosedError("a LoopPool can be entered only once")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._state = _State.OPEN
        ctx: Context
        if self._start_method == "forkserver":
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["__main__", "asyncconc.pool._worker"])
        else:
            ctx = multiprocessing.get_context("spawn")
        scheduler = self._scheduler = Scheduler(
            loop,
            ctx,
            self._config,
            size=self._size,
            concurrency=self._concurrency,
            max_tasks=self._max_tasks,
            retries=self._retries,
        )
        # The first start may wait for the fork server to boot (~0.2 s): do
        # it in a thread so the caller's loop keeps running meanwhile.
        launching = loop.run_in_executor(None, scheduler.launch)
        try:
            launched = await asyncio.shield(launching)
        except BaseException:
            launching.add_done_callback(_kill_when_launched)
            self._close_now()
            raise
        scheduler.attach(launched)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.aclose()
        else:
            self.terminate()
            if self._scheduler is not None:
                await self._scheduler.wait_exited(2.0)

    async def aclose(self) -> None:
        """Wait for outstanding tasks, stop the workers, release everything.

        Idempotent. If cancelled (or anything fails) while waiting, the
        workers are killed before the exception propagates.
        """
        scheduler = self._scheduler
        if scheduler is None or self._state is _State.CLOSED:
            self._state = _State.CLOSED
            if scheduler is not None:
                await scheduler.wait_exited(2.0)
            return
        self._state = _State.CLOSING
        try:
            while futures := scheduler.outstanding():
                await asyncio.wait(futures)
            scheduler.stop_all()
            await scheduler.wait_exited(self._shutdown_timeout)
        finally:
            self._close_now()

    def terminate(self) -> None:
        """Kill the workers now; outstanding tasks fail with PoolClosedError."""
        self._close_now()

    def _close_now(self) -> None:
        self._state = _State.CLOSED
        if self._scheduler is not None:
            self._scheduler.close_now()

    def _new_job(
        self,
        fn: Callable[..., Any],
        arglist: list[Any],
        kwargs: dict[str, Any] | None,
        timeout: float | None,
        star: bool,
    ) -> Job:
        broken = None if self._scheduler is None else self._scheduler.broken
        if broken is not None:
            raise PoolError(str(broken)) from broken.__cause__
        if self._state is not _State.OPEN:
            raise PoolClosedError(f"the pool is {self._state.value}")
        try:
            payload = pickle.dumps(
                (fn, arglist, kwargs, timeout, star), protocol=pickle.HIGHEST_PROTOCOL
            )
        except Exception as exc:
            raise PicklingError(
                f"cannot send {describe(fn)} and its arguments to a worker: {exc}"
            ) from exc
        assert self._loop is not None
        name, is_async = self._fn_info(fn)
        future = self._loop.create_future()
        return Job(next(self._ids), name, payload, len(arglist), is_async, future, timeout)

    def _fn_info(self, fn: Callable[..., Any]) -> tuple[str, bool]:
        # Cached: naming and inspecting a function cost more than pickling
        # a tiny task (measured: ~2 us of ~20 us per submit).
        try:
            return self._fn_cache[fn]
        except KeyError:
            pass
        except TypeError:  # unhashable callable
            return describe(fn), inspect.iscoroutinefunction(fn)
        if len(self._fn_cache) > 256:
            self._fn_cache.clear()
        info = self._fn_cache[fn] = (describe(fn), inspect.iscoroutinefunction(fn))
        return info

    def _enqueue(self, job: Job) -> None:
        assert self._scheduler is not None
        self._scheduler.enqueue(job)

    def _abandon(self, job: Job) -> None:
        assert self._scheduler is not None
        self._scheduler.abandon(job)

    # -- public calls --------------------------------------------------------

    @overload
    async def submit(
        self,
        fn: Callable[P, Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...

    @overload
    async def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    async def submit(self, fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker and return its result.

        Raises what ``fn`` raised (with the remote traceback as a note),
        :class:`PicklingError`, :class:`WorkerCrashedError`,
        :class:`TaskTimeoutError`, or :class:`PoolClosedError`. Cancelling
        the caller cancels the task: a queued task is dropped, a running
        coroutine is cancelled in the worker, a running plain function
        finishes there and its result is discarded.
        """
        job = self._new_job(fn, [args], kwargs or None, self._task_timeout, True)
        self._enqueue(job)
        try:
            results, error, _ = await job.future
        except asyncio.CancelledError:
            self._abandon(job)
            raise
        if error is not None:
            raise error
        return results[0]

    @overload
    def map(
        self,
        fn: Callable[[Any], Coroutine[Any, Any, T]],
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[T]: ...

    @overload
    def map(
        self,
        fn: Callable[[Any], T],
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[T]: ...

    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        """``fn(item)`` for every item, as an async iterator of results.

        The input is read lazily and only a bounded number of items is in
        flight (a few chunks per worker), so an endless generator works and
        a slow consumer slows the producer. ``chunksize=None`` picks it: one
        item at a time for coroutine functions; for plain functions it starts
        at 1 and grows until a chunk takes about 5 ms (at most 4096, and at
        most a quarter of the input per worker when its length is known).
        ``ordered=False`` yields results as chunks complete.

        An exception stops the iteration after the results before it; leaving
        the loop early (``break``) cancels what is in flight once the
        iterator is closed (use :func:`contextlib.aclosing` to make that
        immediate).
        """
        return self._map(fn, iterable, False, chunksize, ordered, timeout)

    @overload
    def starmap(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        iterable: Iterable[Iterable[Any]],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[T]: ...

    @overload
    def starmap(
        self,
        fn: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[T]: ...

    def starmap(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        """Like :meth:`map`, calling ``fn(*args)`` for every ``args`` in ``iterable``."""
        return self._map(fn, iterable, True, chunksize, ordered, timeout)

    async def _map(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        star: bool,
        chunksize: int | None,
        ordered: bool,
        timeout: float | None,
    ) -> AsyncIterator[Any]:
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        if timeout is None:
            timeout = self._task_timeout
        is_async = inspect.iscoroutinefunction(fn)
        sizer = _ChunkSizer(chunksize, is_async, operator.length_hint(iterable, 0), self._size)
        if is_async:
            window = max(2 * self._size, -(-2 * self._size * self._concurrency // sizer.size))
        else:
            window = 2 * self._size + 2
        items = iter(iterable)
        inflight: deque[Job] = deque()
        finished: asyncio.Queue[Job] = asyncio.Queue()
        exhausted = False
        try:
            while True:
                while not exhausted and len(inflight) < window:
                    size = sizer.size
                    chunk = list(islice(items, size))
                    if len(chunk) < size:
                        exhausted = True
                    if not chunk:
                        break
                    if star:
                        chunk = [tuple(args) for args in chunk]
                    job = self._new_job(fn, chunk, None, timeout, star)
                    if not ordered:
                        job.future.add_done_callback(functools.partial(_put, finished, job))
                    self._enqueue(job)
                    inflight.append(job)
                if not inflight:
                    return
                if ordered:
                    job = inflight[0]
                    results, error, elapsed = await job.future
                    inflight.popleft()
                else:
                    job = await finished.get()
                    inflight.remove(job)
                    if job.future.cancelled():
                        continue
                    results, error, elapsed = job.future.result()
                sizer.observe(job.ncalls, elapsed)
                for result in results:
                    yield result
                if error is not None:
                    raise error
        finally:
            for job in inflight:
                self._abandon(job)


@dataclass(slots=True)
class _ChunkSizer:
    fixed: int | None
    is_async: bool
    length: int
    workers: int
    size: int = 1
    cap: int = _MAX_CHUNK

    def __post_init__(self) -> None:
        if self.fixed is not None:
            self.size = self.fixed
        elif self.length:
            self.cap = max(1, min(_MAX_CHUNK, -(-self.length // (4 * self.workers))))

    def observe(self, calls: int, elapsed: float) -> None:
        if self.fixed is not None or self.is_async or calls == 0:
            return
        per_call = max(elapsed / calls, 1e-8)
        wanted = int(_TARGET_CHUNK_SECONDS / per_call)
        self.size = max(1, min(wanted, self.size * 16, self.cap))


def _put(queue: asyncio.Queue[Job], job: Job, future: asyncio.Future[Outcome]) -> None:
    queue.put_nowait(job)


def _kill_when_launched(future: asyncio.Future[Launched]) -> None:
    if not future.cancelled() and future.exception() is None:
        kill_launched(future.result())
