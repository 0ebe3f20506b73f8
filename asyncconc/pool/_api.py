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
small single-threaded process started once, with this module and the main
module preloaded, so a new worker is a cheap ``fork`` of a clean process:
about 5 ms instead of the ~200 ms a spawned interpreter needs to import
asyncconc. That keeps pool start-up and worker replacement fast.

Scheduling: jobs wait in one FIFO and are handed to the least-loaded worker
with room. Room for plain functions is "fewer than two jobs, or less than
about 20 ms of estimated work queued" (the estimate is a running average of
the time per call measured in the workers), so tiny tasks stream in large
batches while long ones are not hoarded by one worker. Coroutine functions
get up to ``2 * concurrency`` calls per worker.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import itertools
import math
import multiprocessing
import multiprocessing.context
import operator
import os
import pickle
import signal
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from itertools import islice
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from asyncconc._errors import (
    PicklingError,
    PoolClosedError,
    PoolError,
    WorkerCrashedError,
)
from asyncconc._runner import resolve_loop
from asyncconc.pool import _protocol as wire
from asyncconc.pool._worker import WorkerConfig, describe
from asyncconc.pool._worker import main as worker_main

__all__ = ["LoopPool"]

P = ParamSpec("P")
T = TypeVar("T")

StartMethod = Literal["forkserver", "spawn"]

# Queued work per worker for plain functions, in estimated seconds.
_SYNC_QUEUE_SECONDS = 0.02
# Automatic chunks for plain functions aim at this much work each.
_TARGET_CHUNK_SECONDS = 0.005
_MAX_CHUNK = 4096
# Workers that die before their initializer finishes, in a row, break the pool.
_MAX_START_FAILURES = 3

_Outcome = tuple[list[Any], BaseException | None, float]


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(eq=False, slots=True)
class _Job:
    ident: int
    fn_name: str
    payload: bytes
    ncalls: int
    is_async: bool
    future: asyncio.Future[_Outcome]
    attempts: int = 0
    estimate: float = 0.0
    worker: _Worker | None = None


@dataclass(eq=False, slots=True)
class _Worker:
    process: multiprocessing.process.BaseProcess
    channel: wire.Channel
    jobs: dict[int, _Job] = field(default_factory=dict)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    accepting: bool = True
    stop_sent: bool = False
    sync_jobs: int = 0
    sync_estimate: float = 0.0
    async_calls: int = 0
    assigned: int = 0


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "died"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


class LoopPool:
    """A pool of worker processes, each running its own event loop.

    Use it as an async context manager::

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
    :class:`TaskTimeoutError` in the caller and the worker lives on.

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
    See the module docstring for the start method.
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
        size = _default_workers() if workers is None else workers
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
        self._workers: list[_Worker] = []
        self._pending: deque[_Job] = deque()
        self._ids = itertools.count(1)
        self._dispatch_scheduled = False
        self._cost = math.inf  # running average of seconds per plain-function call
        self._start_failures = 0
        self._broken: BaseException | None = None
        self._watchdog: tuple[socket.socket, socket.socket] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fn_cache: dict[Callable[..., Any], tuple[str, bool]] = {}
        self._ctx: multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext

    @property
    def workers(self) -> int:
        """How many worker processes the pool keeps running."""
        return self._size

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    # -- life cycle ----------------------------------------------------------

    async def __aenter__(self) -> LoopPool:
        if self._state is not _State.NEW:
            raise PoolClosedError("a LoopPool can be entered only once")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._state = _State.OPEN
        self._watchdog = socket.socketpair()
        if self._start_method == "forkserver":
            forkserver = multiprocessing.get_context("forkserver")
            forkserver.set_forkserver_preload(["__main__", "asyncconc.pool._worker"])
            self._ctx = forkserver
        else:
            self._ctx = multiprocessing.get_context("spawn")
        # The first start may wait for the fork server to boot (~0.2 s): do
        # it in a thread so the caller's loop keeps running meanwhile.
        launched = loop.run_in_executor(None, self._launch_many, self._size)
        try:
            started = await asyncio.shield(launched)
        except BaseException:
            launched.add_done_callback(_kill_launched)
            self._close_now()
            raise
        for process, sock in started:
            self._attach(process, sock)
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
            await self._wait_exited(2.0)

    async def aclose(self) -> None:
        """Wait for outstanding tasks, stop the workers, release everything.

        Idempotent. If cancelled (or anything fails) while waiting, the
        workers are killed before the exception propagates.
        """
        if self._state in (_State.NEW, _State.CLOSED):
            self._state = _State.CLOSED
            await self._wait_exited(2.0)
            return
        self._state = _State.CLOSING
        try:
            while futures := self._outstanding():
                await asyncio.wait(futures)
            for worker in list(self._workers):
                self._stop(worker)
            await self._wait_exited(self._shutdown_timeout)
        finally:
            self._close_now()

    def terminate(self) -> None:
        """Kill the workers now; outstanding tasks fail with PoolClosedError."""
        self._close_now()

    def _close_now(self) -> None:
        if self._state is not _State.CLOSED:
            self._state = _State.CLOSED
        for job in self._all_jobs():
            if not job.future.done():
                job.future.set_result(([], PoolClosedError("the pool was terminated"), 0.0))
        self._pending.clear()
        for worker in self._workers:
            worker.accepting = False
            worker.channel.close()
            if worker.process.exitcode is None:
                worker.process.kill()
        if self._watchdog is not None:
            for sock in self._watchdog:
                sock.close()
            self._watchdog = None

    async def _wait_exited(self, timeout: float) -> None:
        events = [w.exited.wait() for w in self._workers]
        if not events:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*events)
        except TimeoutError:
            for worker in self._workers:
                worker.process.kill()

    def _outstanding(self) -> list[asyncio.Future[_Outcome]]:
        return [job.future for job in self._all_jobs() if not job.future.done()]

    def _all_jobs(self) -> list[_Job]:
        jobs = list(self._pending)
        for worker in self._workers:
            jobs.extend(worker.jobs.values())
        return jobs

    # -- workers -------------------------------------------------------------

    def _launch_many(
        self, count: int
    ) -> list[tuple[multiprocessing.process.BaseProcess, socket.socket]]:
        started: list[tuple[multiprocessing.process.BaseProcess, socket.socket]] = []
        try:
            for _ in range(count):
                started.append(self._launch())
        except BaseException:
            _kill_all(started)
            raise
        return started

    def _launch(self) -> tuple[multiprocessing.process.BaseProcess, socket.socket]:
        assert self._watchdog is not None
        ours, theirs = socket.socketpair()
        process = self._ctx.Process(
            target=worker_main,
            args=(self._config, theirs, self._watchdog[1]),
            name="asyncconc-pool-worker",
            daemon=True,
        )
        try:
            process.start()
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            ours.close()
            name = describe(self._config.initializer)
            raise PicklingError(f"the initializer {name} or its initargs: {exc}") from exc
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return process, ours

    def _attach(self, process: multiprocessing.process.BaseProcess, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        holder: list[_Worker] = []
        channel = wire.Channel(
            loop, sock, lambda frames: self._on_frames(holder[0], frames), lambda: None
        )
        worker = _Worker(process, channel)
        holder.append(worker)
        self._workers.append(worker)
        loop.add_reader(process.sentinel, self._on_exit, worker)
        self._schedule_dispatch()

    def _replace(self) -> None:
        if self._state is not _State.OPEN or self._broken is not None:
            return
        while sum(w.accepting for w in self._workers) < self._size:
            try:
                process, sock = self._launch()
            except Exception as exc:
                self._break(PoolError(f"cannot start a worker process: {exc}"), exc)
                return
            self._attach(process, sock)

    def _stop(self, worker: _Worker) -> None:
        worker.accepting = False
        if not worker.stop_sent:
            worker.stop_sent = True
            worker.channel.send(wire.encode(wire.STOP, 0))

    def _on_exit(self, worker: _Worker) -> None:
        loop = self._loop
        assert loop is not None
        loop.remove_reader(worker.process.sentinel)
        worker.process.join(1.0)  # the sentinel fired: this only collects the code
        code = worker.process.exitcode
        worker.channel.read_pending()
        worker.channel.close()
        worker.accepting = False
        self._workers.remove(worker)
        worker.exited.set()
        if not worker.stop_sent and not worker.ready:
            self._start_failures += 1
        jobs = list(worker.jobs.values())
        worker.jobs.clear()
        for job in reversed(jobs):
            if job.future.done():
                continue
            if job.attempts <= self._retries and self._state is not _State.CLOSED:
                job.worker = None
                self._pending.appendleft(job)
            else:
                message = (
                    f"worker process {worker.process.pid} {_describe_exit(code)} "
                    f"while running {job.fn_name}"
                )
                job.future.set_result(([], WorkerCrashedError(message), 0.0))
        if self._start_failures >= _MAX_START_FAILURES and self._broken is None:
            message = f"worker processes keep dying at start ({_describe_exit(code)})"
            self._break(PoolError(message), None)
            return
        self._replace()
        self._schedule_dispatch()

    def _break(self, error: PoolError, cause: BaseException | None) -> None:
        """The pool cannot work: fail every task, now and later, with ``error``."""
        error.__cause__ = cause
        self._broken = error
        for job in self._all_jobs():
            if not job.future.done():
                copy = PoolError(str(error))
                copy.__cause__ = cause
                job.future.set_result(([], copy, 0.0))
        self._pending.clear()
        for worker in self._workers:
            worker.accepting = False
            if worker.process.exitcode is None:
                worker.process.kill()

    # -- frames from workers -------------------------------------------------

    def _on_frames(self, worker: _Worker, frames: list[wire.Frame]) -> None:
        for kind, ident, payload in frames:
            if kind == wire.RESULT:
                job = worker.jobs.pop(ident, None)
                if job is not None:
                    self._release(worker, job)
                    if not job.future.done():
                        job.future.set_result(self._decode(worker, job, payload))
            elif kind == wire.CANCELLED:
                job = worker.jobs.pop(ident, None)
                if job is not None:
                    self._release(worker, job)
                    job.future.cancel()
            elif kind == wire.READY:
                worker.ready = True
                self._start_failures = 0
            elif kind == wire.INIT_FAILED:
                self._init_failed(payload)
        if not worker.accepting and not worker.jobs and not worker.stop_sent:
            self._stop(worker)
        self._schedule_dispatch()

    def _decode(self, worker: _Worker, job: _Job, payload: bytes) -> _Outcome:
        try:
            results, error, elapsed = pickle.loads(payload)
        except Exception as exc:
            message = f"a result of {job.fn_name} could not be unpickled: {exc!r}"
            return ([], PicklingError(message), 0.0)
        if not job.is_async and elapsed > 0 and results:
            per_call = elapsed / len(results)
            self._cost = per_call if self._cost == math.inf else 0.7 * self._cost + 0.3 * per_call
        if error is None:
            return (results, None, elapsed)
        return (results, self._rebuild_error(worker, job, error), elapsed)

    def _rebuild_error(self, worker: _Worker, job: _Job, error: Any) -> BaseException:
        kind, data, text = error
        if kind == wire.ERR_PICKLING:
            return PicklingError(f"{job.fn_name}: {data}")
        exc: object
        try:
            exc = pickle.loads(data)
        except Exception as problem:
            exc = PicklingError(f"{job.fn_name} raised an exception that cannot be unpickled here")
            exc.__cause__ = problem
        if not isinstance(exc, BaseException):
            exc = PoolError(f"{job.fn_name} raised a non-exception: {exc!r}")
        exc.add_note(f"\nRemote traceback (worker process {worker.process.pid}):\n{text.rstrip()}")
        return exc

    def _init_failed(self, payload: bytes) -> None:
        name = describe(self._config.initializer)
        try:
            blob, text = pickle.loads(payload)
            cause = pickle.loads(blob)
            cause.add_note(f"\nRemote traceback:\n{text.rstrip()}")
        except Exception as exc:
            cause = exc
        message = f"the initializer {name} raised {type(cause).__name__}: {cause}"
        if self._broken is None:
            self._break(PoolError(message), cause)

    def _release(self, worker: _Worker, job: _Job) -> None:
        job.worker = None
        if job.is_async:
            worker.async_calls -= job.ncalls
        else:
            worker.sync_jobs -= 1
            worker.sync_estimate = worker.sync_estimate - job.estimate if worker.sync_jobs else 0.0

    # -- dispatch ------------------------------------------------------------

    def _new_job(
        self,
        fn: Callable[..., Any],
        arglist: list[Any],
        kwargs: dict[str, Any] | None,
        timeout: float | None,
        star: bool,
    ) -> _Job:
        if self._broken is not None:
            raise PoolError(str(self._broken)) from self._broken.__cause__
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
        return _Job(
            next(self._ids), name, payload, len(arglist), is_async, self._loop.create_future()
        )

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

    def _enqueue(self, job: _Job) -> None:
        self._pending.append(job)
        self._schedule_dispatch()

    def _schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled and self._pending and self._loop is not None:
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        pending = self._pending
        while pending:
            job = pending[0]
            if job.future.done():
                pending.popleft()
                continue
            worker = self._pick(job)
            if worker is None:
                return
            pending.popleft()
            self._send_job(worker, job)

    def _pick(self, job: _Job) -> _Worker | None:
        best: _Worker | None = None
        for worker in self._workers:
            if not worker.accepting or not self._has_room(worker, job):
                continue
            if best is None or len(worker.jobs) < len(best.jobs):
                best = worker
        return best

    def _has_room(self, worker: _Worker, job: _Job) -> bool:
        limit = self._max_tasks
        if limit is not None and worker.assigned and worker.assigned + job.ncalls > limit:
            return False
        if job.is_async:
            calls = worker.async_calls
            return calls == 0 or calls + job.ncalls <= 2 * self._concurrency
        if worker.sync_jobs < 2:
            return True
        return worker.sync_estimate + job.ncalls * self._cost <= _SYNC_QUEUE_SECONDS

    def _send_job(self, worker: _Worker, job: _Job) -> None:
        job.attempts += 1
        job.worker = worker
        worker.jobs[job.ident] = job
        worker.assigned += job.ncalls
        if job.is_async:
            worker.async_calls += job.ncalls
        else:
            worker.sync_jobs += 1
            job.estimate = job.ncalls * self._cost if self._cost != math.inf else 0.0
            worker.sync_estimate += job.estimate
        worker.channel.send(wire.encode(wire.JOB, job.ident, job.payload))
        if self._max_tasks is not None and worker.assigned >= self._max_tasks:
            # Retire it: no new work; a fresh worker starts now, this one
            # stops once its last job is back.
            worker.accepting = False
            self._replace()

    def _abandon(self, job: _Job) -> None:
        """The caller no longer wants ``job``: drop it, or cancel it remotely."""
        if not job.future.done():
            job.future.cancel()
        worker = job.worker
        if worker is not None and job.ident in worker.jobs and not worker.channel.closed:
            worker.channel.send(wire.encode(wire.CANCEL, job.ident))

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
        inflight: deque[_Job] = deque()
        finished: asyncio.Queue[_Job] = asyncio.Queue()
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


def _put(queue: asyncio.Queue[_Job], job: _Job, future: asyncio.Future[_Outcome]) -> None:
    queue.put_nowait(job)


def _kill_all(started: list[tuple[multiprocessing.process.BaseProcess, socket.socket]]) -> None:
    for process, sock in started:
        sock.close()
        process.kill()


def _kill_launched(
    future: asyncio.Future[list[tuple[multiprocessing.process.BaseProcess, socket.socket]]],
) -> None:
    if not future.cancelled() and future.exception() is None:
        _kill_all(future.result())
