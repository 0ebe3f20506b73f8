"""The worker processes of a LoopPool and the jobs waiting for them.

:class:`Scheduler` starts workers, hands them jobs, reads their replies and
notices their deaths; :class:`~asyncconc.pool._api.LoopPool` turns calls
into jobs and owns the pool's life cycle.

Every worker is watched twice from the caller's loop: its socket (replies)
and its process sentinel (death, seen at once). When a worker dies, frames
it sent just before are read first; then each job it still held is queued
again if ``retries`` allows, or fails with :class:`WorkerCrashedError`, and
a replacement starts: a fork from the fork server, done synchronously in the
loop because it takes a few milliseconds (only if the fork server itself
has died does this block for its ~0.2 s reboot).
Workers that die before their initializer finishes, three times in a row,
break the pool instead of respawning forever.

Scheduling: jobs wait in one FIFO and go to the least-loaded worker with
room. Room for plain functions is "fewer than two jobs, or less than about
20 ms of estimated work queued" (the estimate is a running average of the
time per call measured in the workers), so tiny tasks stream in large
batches while long ones are not hoarded by one worker. Coroutine functions
get up to ``2 * concurrency`` calls per worker.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import pickle
import signal
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from asyncconc._errors import (
    PicklingError,
    PoolClosedError,
    PoolError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from asyncconc.pool import _protocol as wire
from asyncconc.pool._worker import WorkerConfig, describe
from asyncconc.pool._worker import main as worker_main

__all__ = ["Job", "Launched", "Outcome", "Scheduler", "kill_launched"]

# Queued work per worker for plain functions, in estimated seconds.
_SYNC_QUEUE_SECONDS = 0.02
# Workers that die before their initializer finishes, in a row, break the pool.
_MAX_START_FAILURES = 3
# A plain-function job this long past its timeout is stuck where SIGALRM
# cannot reach (C code): its worker is killed.
_BACKSTOP_GRACE = 2.0

# (results before the failure, the failure or None, seconds measured in the worker)
Outcome = tuple[list[Any], BaseException | None, float]
Launched = list[tuple[multiprocessing.process.BaseProcess, socket.socket]]
Context = multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext


@dataclass(eq=False, slots=True)
class Job:
    """Calls of one function, sent to one worker in one frame."""

    ident: int
    fn_name: str
    payload: bytes
    ncalls: int
    is_async: bool
    future: asyncio.Future[Outcome]
    timeout: float | None = None
    attempts: int = 0
    estimate: float = 0.0
    worker: WorkerHandle | None = None
    backstop: asyncio.TimerHandle | None = None


@dataclass(eq=False, slots=True)
class WorkerHandle:
    process: multiprocessing.process.BaseProcess
    channel: wire.Channel
    jobs: dict[int, Job] = field(default_factory=dict)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    accepting: bool = True
    stop_sent: bool = False
    sync_jobs: int = 0
    sync_estimate: float = 0.0
    async_calls: int = 0
    assigned: int = 0


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


class Scheduler:
    """Worker processes, the FIFO of jobs, and what happens when workers die."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ctx: Context,
        config: WorkerConfig,
        *,
        size: int,
        concurrency: int,
        max_tasks: int | None,
        retries: int,
    ) -> None:
        self._loop = loop
        self._ctx = ctx
        self._config = config
        self._size = size
        self._concurrency = concurrency
        self._max_tasks = max_tasks
        self._retries = retries
        self._workers: list[WorkerHandle] = []
        self._pending: deque[Job] = deque()
        self._dispatch_scheduled = False
        self._cost = math.inf  # running average of seconds per plain-function call
        self._start_failures = 0
        self._stopping = False  # STOP sent to all: no replacements
        self._closed = False  # killed: no replacements, no retries
        self.broken: PoolError | None = None
        # Workers read EOF on their end once this process holds the other
        # end no more, however it ended (see _worker._watch).
        self._watchdog: tuple[socket.socket, socket.socket] | None = socket.socketpair()

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def outstanding(self) -> list[asyncio.Future[Outcome]]:
        return [job.future for job in self._all_jobs() if not job.future.done()]

    def stop_all(self) -> None:
        """Ask every worker to finish what it holds and exit."""
        self._stopping = True
        for worker in list(self._workers):
            self._stop(worker)

    def close_now(self) -> None:
        """Kill every worker; unfinished jobs fail with PoolClosedError."""
        self._closed = True
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

    async def wait_exited(self, timeout: float) -> None:
        """Wait until every worker has exited; kill those still alive after ``timeout``."""
        events = [w.exited.wait() for w in self._workers]
        if not events:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*events)
        except TimeoutError:
            for worker in self._workers:
                worker.process.kill()

    def _all_jobs(self) -> list[Job]:
        jobs = list(self._pending)
        for worker in self._workers:
            jobs.extend(worker.jobs.values())
        return jobs

    # -- workers -------------------------------------------------------------

    def launch(self) -> Launched:
        """Start the first workers; blocking, so LoopPool runs it in a thread."""
        started: Launched = []
        try:
            for _ in range(self._size):
                started.append(self._launch())
        except BaseException:
            kill_launched(started)
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

    def attach(self, launched: Launched) -> None:
        """Watch started workers from this loop and start handing them jobs."""
        for process, sock in launched:
            self._attach(process, sock)

    def _attach(self, process: multiprocessing.process.BaseProcess, sock: socket.socket) -> None:
        loop = self._loop
        holder: list[WorkerHandle] = []
        channel = wire.Channel(
            loop, sock, lambda frames: self._on_frames(holder[0], frames), lambda: None
        )
        worker = WorkerHandle(process, channel)
        holder.append(worker)
        self._workers.append(worker)
        loop.add_reader(process.sentinel, self._on_exit, worker)
        self._schedule_dispatch()

    def _replace(self) -> None:
        if self._stopping or self._closed or self.broken is not None:
            return
        while sum(w.accepting for w in self._workers) < self._size:
            try:
                process, sock = self._launch()
            except Exception as exc:
                self._break(PoolError(f"cannot start a worker process: {exc}"), exc)
                return
            self._attach(process, sock)

    def _stop(self, worker: WorkerHandle) -> None:
        worker.accepting = False
        if not worker.stop_sent:
            worker.stop_sent = True
            worker.channel.send(wire.encode(wire.STOP, 0))

    def _on_exit(self, worker: WorkerHandle) -> None:
        self._loop.remove_reader(worker.process.sentinel)
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
            if job.backstop is not None:
                job.backstop.cancel()
                job.backstop = None
            if job.future.done():
                continue
            if job.attempts <= self._retries and not self._closed:
                job.worker = None
                self._pending.appendleft(job)
            else:
                message = (
                    f"worker process {worker.process.pid} {_describe_exit(code)} "
                    f"while running {job.fn_name}"
                )
                job.future.set_result(([], WorkerCrashedError(message), 0.0))
        if self._start_failures >= _MAX_START_FAILURES and self.broken is None:
            message = f"worker processes keep dying at start ({_describe_exit(code)})"
            self._break(PoolError(message), None)
            return
        self._replace()
        self._schedule_dispatch()

    def _break(self, error: PoolError, cause: BaseException | None) -> None:
        """The pool cannot work: fail every task, now and later, with ``error``."""
        error.__cause__ = cause
        self.broken = error
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

    def _on_frames(self, worker: WorkerHandle, frames: list[wire.Frame]) -> None:
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
            elif kind == wire.STARTED:
                job = worker.jobs.get(ident)
                if job is not None and job.timeout is not None and job.backstop is None:
                    delay = job.timeout * job.ncalls + _BACKSTOP_GRACE
                    job.backstop = self._loop.call_later(delay, self._overrun, worker, job)
            elif kind == wire.READY:
                worker.ready = True
                self._start_failures = 0
            elif kind == wire.INIT_FAILED:
                self._init_failed(payload)
        if not worker.accepting and not worker.jobs and not worker.stop_sent:
            self._stop(worker)
        self._schedule_dispatch()

    def _decode(self, worker: WorkerHandle, job: Job, payload: bytes) -> Outcome:
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

    def _rebuild_error(self, worker: WorkerHandle, job: Job, error: Any) -> BaseException:
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
        if self.broken is None:
            self._break(PoolError(message), cause)

    def _overrun(self, worker: WorkerHandle, job: Job) -> None:
        """``job`` ignored SIGALRM past its timeout: fail it and kill its worker.

        The worker's other jobs then follow the crash rules (retry or
        :class:`WorkerCrashedError`).
        """
        job.backstop = None
        if worker.jobs.pop(job.ident, None) is None:
            return
        self._release(worker, job)
        if not job.future.done():
            message = (
                f"{job.fn_name} exceeded its timeout of {job.timeout:g} s and could not be "
                f"interrupted; its worker process {worker.process.pid} was killed"
            )
            job.future.set_result(([], TaskTimeoutError(message), 0.0))
        worker.accepting = False
        if worker.process.exitcode is None:
            worker.process.kill()

    def _release(self, worker: WorkerHandle, job: Job) -> None:
        job.worker = None
        if job.backstop is not None:
            job.backstop.cancel()
            job.backstop = None
        if job.is_async:
            worker.async_calls -= job.ncalls
        else:
            worker.sync_jobs -= 1
            worker.sync_estimate = worker.sync_estimate - job.estimate if worker.sync_jobs else 0.0

    # -- dispatch ------------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        self._pending.append(job)
        self._schedule_dispatch()

    def _schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled and self._pending:
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

    def _pick(self, job: Job) -> WorkerHandle | None:
        best: WorkerHandle | None = None
        for worker in self._workers:
            if not worker.accepting or not self._has_room(worker, job):
                continue
            if best is None or len(worker.jobs) < len(best.jobs):
                best = worker
        return best

    def _has_room(self, worker: WorkerHandle, job: Job) -> bool:
        limit = self._max_tasks
        if limit is not None and worker.assigned and worker.assigned + job.ncalls > limit:
            return False
        if job.is_async:
            calls = worker.async_calls
            return calls == 0 or calls + job.ncalls <= 2 * self._concurrency
        if worker.sync_jobs < 2:
            return True
        return worker.sync_estimate + job.ncalls * self._cost <= _SYNC_QUEUE_SECONDS

    def _send_job(self, worker: WorkerHandle, job: Job) -> None:
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

    def abandon(self, job: Job) -> None:
        """The caller no longer wants ``job``: drop it, or cancel it remotely."""
        if not job.future.done():
            job.future.cancel()
        worker = job.worker
        if worker is not None and job.ident in worker.jobs and not worker.channel.closed:
            worker.channel.send(wire.encode(wire.CANCEL, job.ident))


def kill_launched(launched: Launched) -> None:
    for process, sock in launched:
        sock.close()
        process.kill()
