"""LoopPool: worker processes, each with its own event loop, driven from yours.

The caller's loop talks to every worker over one socket (see
:mod:`asyncconc.pool._protocol`), watched with ``add_reader``, so waiting
never blocks the loop.

Start method: ``forkserver`` (default, where ``fork`` exists) or ``spawn``;
never a plain ``fork`` of the caller. Forking a process that already runs an
event loop, threads or an open HTTP session copies locks held by other
threads and the loop's file descriptors into the child, which then
deadlocks or steals wake-ups (see the CPython docs on start methods and
bpo-6721). Each pool starts its own small fork server, which imports the
main module and the worker module once; a new worker is a ``fork`` of that
clean, single-threaded process (a few ms, no side effects) instead of a new
interpreter (~0.2 s). See :mod:`asyncconc.pool._forkserver` for why this is
not :mod:`multiprocessing`'s fork server, and for the death chain.

Worker processes, dispatch, timeouts and crash handling live in
:mod:`asyncconc.pool._scheduler`; this module turns calls into jobs and
owns the pool's life cycle.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from asyncconc._errors import (
    PicklingError,
    PoolClosedError,
    PoolError,
)
from asyncconc._runner import resolve_loop
from asyncconc.pool import _protocol as wire
from asyncconc.pool._backend import ChunkPolicy, map_window
from asyncconc.pool._scheduler import TIMEOUT_GRACE, Job, Outcome, Scheduler
from asyncconc.pool._worker import WorkerConfig, describe, is_coroutine_callable

if TYPE_CHECKING:
    from asyncconc.pool._executor import PoolExecutor

__all__ = ["LoopPool"]

P = ParamSpec("P")
T = TypeVar("T")

StartMethod = Literal["forkserver", "spawn"]

# Automatic chunks for plain functions aim at 5 ms of work each, 4096 calls at most;
# each coroutine call is a chunk of its own.
_CHUNKS = ChunkPolicy(target=0.005, max_chunk=4096)


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
    every worker before its first task; a worker gets tasks only once it
    has returned. If it raises, or does not return within ``init_timeout``
    seconds (default 60), the pool breaks: every task fails with
    :class:`BrokenPoolError` naming the initializer (caused by its
    exception). ``init_timeout`` also bounds the fork server's start
    (importing the main module). ``preload``: names of modules every worker
    imports before its first task; with the fork server they are imported
    once, before the workers are forked, so the workers share those pages
    (measured for ``download --workers 2``: 14 MB less summed PSS) instead of
    each importing its own. ``max_tasks_per_worker`` retires a worker
    after that many tasks (a map chunk is never split, so a worker may run
    one chunk past it) and starts a fresh one. ``retries`` is how many more
    times a task runs when the worker running it dies after starting it (a
    task the worker had not started is always run elsewhere).

    Timeouts: ``task_timeout`` (seconds) bounds each call of :meth:`submit`,
    :meth:`map` and :meth:`starmap` (``timeout=`` of the maps overrides it),
    counted from when the call is handed to a worker. The worker interrupts
    the call at ``T`` (``asyncio.timeout`` for coroutines, SIGALRM for plain
    functions) and lives on; if it has not answered ``T`` +
    ``TIMEOUT_GRACE`` (1 s) after hand-over — a coroutine that blocks its
    loop or swallows cancellation, C code deaf to signals, a stopped
    process — the pool fails the call with :class:`TaskTimeoutError`, kills
    the worker, starts a replacement and runs what was queued behind it
    elsewhere. So with ``task_timeout=T`` an ``await pool.submit(...)`` that
    has been handed to a worker returns within ``T + 1`` s.

    Errors: a task's exception is re-raised as itself with the worker's
    traceback attached as a note; an argument or result that cannot be
    pickled raises :class:`PicklingError` naming the function; a worker that
    dies is replaced at once and the tasks it held fail with
    :class:`WorkerCrashedError` (or run again, up to ``retries``). Workers
    killed from outside while starting are replaced and never break the pool.

    Shutdown: leaving the block normally waits for outstanding tasks, then
    stops the workers; leaving it with an exception, including cancellation
    and Ctrl-C, kills them at once. :meth:`terminate` kills them now. Workers
    never outlive the thread that entered the pool (so never this process):
    the kernel SIGKILLs the fork server when that thread ends and each worker
    when the fork server ends (Linux ``PR_SET_PDEATHSIG``), even while they
    hold the GIL in C code. Functions must be importable by name (module
    level, not lambdas or closures) and the main script must guard its
    entry point with ``if __name__ == "__main__":``, since the fork server
    imports it (once per pool). :meth:`executor` gives a
    ``concurrent.futures.Executor`` over the same workers; for code without
    an event loop, see :class:`~asyncconc.LoopPoolExecutor`.
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
        init_timeout: float = 60.0,
        preload: Iterable[str] = (),
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
        if not init_timeout > 0:
            raise ValueError(f"init_timeout must be positive, not {init_timeout}")
        if start_method is None:
            start_method = "forkserver" if hasattr(os, "fork") else "spawn"
        elif start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be 'forkserver' or 'spawn', not {start_method!r}")
        self._init_timeout = init_timeout
        self._size = size
        self._concurrency = concurrency
        self._max_tasks = max_tasks_per_worker
        self._retries = retries
        self._task_timeout = task_timeout
        self._shutdown_timeout = shutdown_timeout
        self._start_method: StartMethod = start_method
        self._config = WorkerConfig(
            concurrency, initializer, tuple(initargs), resolve_loop(loop), tuple(preload)
        )
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

    def process_pids(self) -> list[int]:
        """Process ids of every live process the pool started: fork server and workers."""
        return [] if self._scheduler is None else self._scheduler.process_pids()

    #: How long past its timeout a call may go before the pool kills its worker.
    timeout_grace = TIMEOUT_GRACE

    # -- life cycle ----------------------------------------------------------

    async def __aenter__(self) -> LoopPool:
        if self._state is not _State.NEW:
            raise PoolClosedError("a LoopPool can be entered only once")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._state = _State.OPEN
        try:
            scheduler = self._scheduler = Scheduler(
                loop,
                self._start_method,
                self._config,
                size=self._size,
                concurrency=self._concurrency,
                max_tasks=self._max_tasks,
                retries=self._retries,
                init_timeout=self._init_timeout,
            )
            await scheduler.start()
        except BaseException:
            self._close_now()
            raise
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
            raise type(broken)(str(broken)) from broken.__cause__
        if self._state is not _State.OPEN:
            raise PoolClosedError(f"the pool is {self._state.value}")
        try:
            payload = wire.dumps((fn, arglist, kwargs, timeout, star))
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
            return describe(fn), is_coroutine_callable(fn)
        if len(self._fn_cache) > 256:
            self._fn_cache.clear()
        info = self._fn_cache[fn] = (describe(fn), is_coroutine_callable(fn))
        return info

    def _broken(self) -> PoolError | None:
        return None if self._scheduler is None else self._scheduler.broken

    def executor(self) -> PoolExecutor:
        """A ``concurrent.futures.Executor`` over this pool's workers.

        Usable from any thread and with ``loop.run_in_executor``; it does not
        own the pool (its ``shutdown`` stops only its own calls). See
        :class:`~asyncconc.pool._executor.PoolExecutor`.
        """
        from asyncconc.pool._executor import PoolExecutor

        if self._loop is None or self._state is not _State.OPEN:
            raise PoolClosedError("the pool is not open")
        return PoolExecutor(self, self._loop)

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
        if timeout is None:
            timeout = self._task_timeout
        is_async = is_coroutine_callable(fn)
        sizer = _CHUNKS.sizer(iterable, chunksize, is_async, self._size, self._concurrency)
        window = map_window(self._size, self._concurrency, sizer.size, is_async)
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


def _put(queue: asyncio.Queue[Job], job: Job, future: asyncio.Future[Outcome]) -> None:
    queue.put_nowait(job)
