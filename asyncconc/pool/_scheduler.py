"""The worker processes of a LoopPool and the jobs waiting for them.

:class:`Scheduler` starts workers (through a launcher, see ``_launcher``),
hands them jobs, reads their replies, enforces timeouts and notices deaths;
:class:`~asyncconc.pool._api.LoopPool` turns calls into jobs and owns the
pool's life cycle.

Deaths are reported by the launcher (the fork server reaps the workers and
sends each exit status). When a worker dies, frames it sent just before are
read first; then each job it had not started is queued again at once (not a
retry: it never ran), and each job it had started is queued again if
``retries`` allows, or fails with :class:`WorkerCrashedError`. A
replacement starts at once (a fork: a few milliseconds).

Start-up: a worker gets jobs only after it has sent READY (its initializer
has returned), so a worker that dies while initialising never takes a task
with it. A worker not READY within ``init_timeout`` is killed: with an
initializer, the pool breaks naming it; without, it is replaced. Workers
killed from outside (SIGKILL, SIGTERM) while starting are replaced with a
short back-off and never break the pool; workers that exit or crash by
themselves before READY three times in a row break it (the initializer, or
the main module's import, is at fault).

Timeouts are enforced here, not trusted to the worker. A coroutine job is
due ``timeout`` (times the rounds of ``concurrency``, for a chunk) after it was
handed over; with a timeout, a worker holds at most ``concurrency``
coroutine calls, so hand-over is start. Plain-function jobs run in order on
the worker's main thread: the one at the head is due ``timeout`` after the
worker's last sign of life for plain work (hand-over to an idle worker, the
previous result, STARTED, or PROGRESS after a finished call). Past the due
time plus :data:`TIMEOUT_GRACE`, the job fails with
:class:`TaskTimeoutError`, the worker is killed and replaced, and the jobs
it had not started run elsewhere.

Scheduling: jobs wait in one FIFO and go to the least-loaded ready worker
with room. Room for plain functions is "fewer than two jobs, or less than
about 20 ms of estimated work queued"; coroutine jobs prefer workers that
run no plain function and get up to ``2 * concurrency`` calls per worker.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import signal
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asyncconc._errors import (
    BrokenPoolError,
    PicklingError,
    PoolClosedError,
    PoolError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from asyncconc.pool import _protocol as wire
from asyncconc.pool._launcher import ForkServerLauncher, Launcher, SpawnLauncher
from asyncconc.pool._worker import WorkerConfig, describe

__all__ = ["TIMEOUT_GRACE", "Job", "Outcome", "Scheduler"]

# How far past its timeout the pool waits for a job before killing its worker.
TIMEOUT_GRACE = 1.0
# Queued work per worker for plain functions, in estimated seconds.
_SYNC_QUEUE_SECONDS = 0.02
# Workers that exit by themselves before READY, in a row, break the pool.
_MAX_START_FAILURES = 3
# Signals that mean "killed from outside" (not the worker's own fault).
_OUTSIDE_KILLS = {-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP}

# (results before the failure, the failure or None, seconds measured in the worker)
Outcome = tuple[list[Any], BaseException | None, float]


@dataclass(eq=False, slots=True)
class Job:
    """Calls of one function, sent to one worker in one frame."""

    ident: int
    fn_name: str
    payload: wire.Pieces
    ncalls: int
    is_async: bool
    future: asyncio.Future[Outcome]
    timeout: float | None = None
    # Called just before hand-over; False means "no longer wanted" (the
    # Executor face's Future was cancelled).
    claim: Callable[[], bool] | None = None
    attempts: int = 0
    estimate: float = 0.0
    started: bool = False
    worker: WorkerHandle | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False, slots=True)
class WorkerHandle:
    token: int
    channel: wire.Channel
    pid: int | None = None
    jobs: dict[int, Job] = field(default_factory=dict)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    accepting: bool = True
    stop_sent: bool = False
    sync_jobs: int = 0
    sync_estimate: float = 0.0
    async_calls: int = 0
    assigned: int = 0
    sync_clock: float = 0.0  # last sign of life for plain-function work
    sync_timer: asyncio.TimerHandle | None = None
    init_timer: asyncio.TimerHandle | None = None
    killed_because: str | None = None


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
    """Worker processes, the FIFO of jobs, timeouts, and what happens when workers die."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        start_method: str,
        config: WorkerConfig,
        *,
        size: int,
        concurrency: int,
        max_tasks: int | None,
        retries: int,
        init_timeout: float,
    ) -> None:
        self._loop = loop
        self._config = config
        self._init_name = None if config.initializer is None else describe(config.initializer)
        try:
            self._config_frame = wire.encode(wire.CONFIG, 0, wire.dumps(config))
        except Exception as exc:
            raise PicklingError(
                f"the initializer {self._init_name} or its initargs cannot be sent to a "
                f"worker: {exc}"
            ) from exc
        launcher_type = ForkServerLauncher if start_method == "forkserver" else SpawnLauncher
        self._launcher: Launcher = launcher_type(
            loop, self._on_forked, self._on_exit, self._lost, preload=config.preload
        )
        self._size = size
        self._concurrency = concurrency
        self._max_tasks = max_tasks
        self._retries = retries
        self._init_timeout = init_timeout
        self._workers: list[WorkerHandle] = []
        self._by_token: dict[int, WorkerHandle] = {}
        self._by_pid: dict[int, WorkerHandle] = {}
        self._tokens = 0
        self._pending: deque[Job] = deque()
        self._dispatch_scheduled = False
        self._starting = False
        self._cost = math.inf  # running average of seconds per plain-function call
        self._start_failures = 0
        self._outside_kills = 0
        self._respawn: asyncio.TimerHandle | None = None
        self._stopping = False  # STOP sent to all: no replacements
        self._closed = False  # killed: no replacements, no retries
        self._forked = asyncio.Event()
        self.broken: PoolError | None = None

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    def process_pids(self) -> list[int]:
        """Every process this pool started that is still running: server and workers."""
        return self._launcher.server_pids() + self.worker_pids()

    def outstanding(self) -> list[asyncio.Future[Outcome]]:
        return [job.future for job in self._all_jobs() if not job.future.done()]

    async def start(self) -> None:
        """Start the launcher and the first workers; return once their pids are known."""
        await self._launcher.start(self._init_timeout)
        for _ in range(self._size):
            self._spawn()
        while self.broken is None and any(w.pid is None for w in self._workers):
            self._forked.clear()
            await self._forked.wait()
        if self.broken is not None:
            raise self.broken

    def stop_all(self) -> None:
        """Ask every worker to finish what it holds and exit."""
        self._stopping = True
        if self._respawn is not None:
            self._respawn.cancel()
        for worker in list(self._workers):
            self._stop(worker)

    def close_now(self) -> None:
        """Kill every worker; unfinished jobs fail with PoolClosedError."""
        self._closed = True
        if self._respawn is not None:
            self._respawn.cancel()
        for job in self._all_jobs():
            self._cancel_timer(job)
            if not job.future.done():
                job.future.set_result(([], PoolClosedError("the pool was terminated"), 0.0))
        self._pending.clear()
        for worker in self._workers:
            worker.accepting = False
            worker.channel.close()
            self._cancel_worker_timers(worker)
        self._launcher.close()
        for worker in self._workers:
            worker.exited.set()

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
                self._kill(worker)

    def _all_jobs(self) -> list[Job]:
        jobs = list(self._pending)
        for worker in self._workers:
            jobs.extend(worker.jobs.values())
        return jobs

    # -- workers -------------------------------------------------------------

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        wire.tune(ours)
        self._tokens += 1
        token = self._tokens
        try:
            self._launcher.launch(token, theirs, ours)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        holder: list[WorkerHandle] = []
        channel = wire.Channel(
            self._loop, ours, lambda frames: self._on_frames(holder[0], frames), lambda: None
        )
        worker = WorkerHandle(token, channel)
        holder.append(worker)
        self._workers.append(worker)
        self._by_token[token] = worker
        channel.send(self._config_frame)
        worker.init_timer = self._loop.call_later(self._init_timeout, self._init_overdue, worker)

    def _on_forked(self, token: int, pid: int) -> None:
        worker = self._by_token.pop(token, None)
        if worker is None:
            return
        worker.pid = pid
        self._by_pid[pid] = worker
        self._forked.set()

    def _replace(self) -> None:
        if self._stopping or self._closed or self.broken is not None or self._respawn:
            return
        while sum(w.accepting for w in self._workers) < self._size:
            try:
                self._spawn()
            except Exception as exc:
                self._break(f"cannot start a worker process: {exc}", exc)
                return

    def _respawn_later(self) -> None:
        self._respawn = None
        self._replace()
        self._schedule_dispatch()

    def _stop(self, worker: WorkerHandle) -> None:
        worker.accepting = False
        if not worker.stop_sent:
            worker.stop_sent = True
            worker.channel.send(wire.encode(wire.STOP, 0))

    def _kill(self, worker: WorkerHandle, reason: str | None = None) -> None:
        worker.accepting = False
        if reason is not None and worker.killed_because is None:
            worker.killed_because = reason
        if worker.pid is not None and not worker.exited.is_set():
            self._launcher.kill(worker.pid)

    def _lost(self, message: str) -> None:
        """The fork server died: its workers died with it (PR_SET_PDEATHSIG)."""
        if self._closed:
            return
        self._break(message, None)
        for worker in list(self._workers):
            if worker.pid is not None:
                self._on_exit(worker.pid, None)

    def _on_exit(self, pid: int, code: int | None) -> None:
        worker = self._by_pid.pop(pid, None)
        if worker is None or worker not in self._workers:
            return
        worker.channel.read_pending()
        worker.channel.close()
        worker.accepting = False
        self._cancel_worker_timers(worker)
        self._workers.remove(worker)
        worker.exited.set()
        self._requeue_unstarted(worker)
        what = _describe_exit(code)
        for job in reversed(list(worker.jobs.values())):
            self._cancel_timer(job)
            if job.future.done():
                continue
            if job.attempts <= self._retries and not self._closed:
                job.worker = None
                self._pending.appendleft(job)
            else:
                reason = f" ({worker.killed_because})" if worker.killed_because else ""
                message = f"worker process {pid} {what} while running {job.fn_name}{reason}"
                job.future.set_result(([], WorkerCrashedError(message), 0.0))
        worker.jobs.clear()
        if self._closed or self._stopping or self.broken is not None:
            return
        delay = 0.0
        if not worker.ready and worker.killed_because is None:
            if code in _OUTSIDE_KILLS:
                # Killed from outside while starting: not the initializer's
                # fault. Back off a little so a kill storm is not a fork storm.
                self._outside_kills += 1
                delay = min(1.0, 0.005 * 2 ** min(self._outside_kills, 8))
            else:
                self._start_failures += 1
                if self._start_failures >= _MAX_START_FAILURES:
                    self._break(self._start_failure_message(what), None)
                    return
        if delay and self._respawn is None:
            self._respawn = self._loop.call_later(delay, self._respawn_later)
        else:
            self._replace()
        self._schedule_dispatch()

    def _start_failure_message(self, what: str) -> str:
        if self._init_name is not None:
            return (
                f"the initializer {self._init_name} did not return: "
                f"{_MAX_START_FAILURES} workers in a row {what} while running it"
            )
        return f"worker processes keep dying at start ({_MAX_START_FAILURES} in a row {what})"

    def _init_overdue(self, worker: WorkerHandle) -> None:
        worker.init_timer = None
        if worker.ready or worker.exited.is_set():
            return
        if self._init_name is not None:
            message = (
                f"the initializer {self._init_name} did not return within "
                f"init_timeout={self._init_timeout:g} s"
            )
            self._kill(worker, message)
            self._break(message, None)
        else:
            self._kill(worker, f"it did not start within init_timeout={self._init_timeout:g} s")

    def _break(self, message: str, cause: BaseException | None) -> None:
        """The pool cannot work: fail every task, now and later, with BrokenPoolError."""
        if self.broken is not None:
            return
        error = BrokenPoolError(message)
        error.__cause__ = cause
        self.broken = error
        for job in self._all_jobs():
            self._cancel_timer(job)
            if not job.future.done():
                copy = BrokenPoolError(message)
                copy.__cause__ = cause
                job.future.set_result(([], copy, 0.0))
        self._pending.clear()
        for worker in self._workers:
            self._kill(worker)
        self._forked.set()

    # -- frames from workers -------------------------------------------------

    def _on_frames(self, worker: WorkerHandle, frames: list[wire.Frame]) -> None:
        now = self._loop.time()
        for kind, ident, payload in frames:
            if kind == wire.RESULT or kind == wire.CANCELLED:
                job = worker.jobs.pop(ident, None)
                if job is None:
                    continue
                if not job.is_async:
                    worker.sync_clock = now
                self._release(worker, job)
                if kind == wire.CANCELLED:
                    job.future.cancel()
                elif not job.future.done():
                    job.future.set_result(self._decode(worker, job, payload))
            elif kind == wire.STARTED or kind == wire.PROGRESS:
                job = worker.jobs.get(ident)
                if job is not None:
                    job.started = True
                    if not job.is_async:
                        worker.sync_clock = now
            elif kind == wire.READY:
                worker.ready = True
                self._start_failures = 0
                self._outside_kills = 0
                if worker.init_timer is not None:
                    worker.init_timer.cancel()
                    worker.init_timer = None
            elif kind == wire.INIT_FAILED:
                self._init_failed(payload)
        self._arm_sync(worker)
        if not worker.accepting and not worker.jobs and not worker.stop_sent:
            self._stop(worker)
        self._schedule_dispatch()

    def _decode(self, worker: WorkerHandle, job: Job, payload: bytes | memoryview) -> Outcome:
        try:
            results, error, elapsed = wire.loads(payload)
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
        exc.add_note(f"\nRemote traceback (worker process {worker.pid}):\n{text.rstrip()}")
        return exc

    def _init_failed(self, payload: bytes | memoryview) -> None:
        try:
            blob, text = pickle.loads(payload)
            cause = pickle.loads(blob)
            cause.add_note(f"\nRemote traceback:\n{text.rstrip()}")
        except Exception as exc:
            cause = exc
        message = f"the initializer {self._init_name} raised {type(cause).__name__}: {cause}"
        self._break(message, cause)

    # -- timeouts ------------------------------------------------------------

    def _arm_sync(self, worker: WorkerHandle) -> None:
        """Make sure the head plain-function job with a timeout has a timer."""
        if worker.sync_timer is not None or not worker.sync_jobs:
            return
        head = self._sync_head(worker)
        if head is not None and head.timeout is not None:
            due = worker.sync_clock + head.timeout + TIMEOUT_GRACE
            worker.sync_timer = self._loop.call_at(due, self._check_sync, worker)

    def _sync_head(self, worker: WorkerHandle) -> Job | None:
        for job in worker.jobs.values():
            if not job.is_async:
                return job
        return None

    def _check_sync(self, worker: WorkerHandle) -> None:
        worker.sync_timer = None
        head = self._sync_head(worker)
        if head is None or head.timeout is None or worker.exited.is_set():
            return
        due = worker.sync_clock + head.timeout + TIMEOUT_GRACE
        if self._loop.time() < due:
            worker.sync_timer = self._loop.call_at(due, self._check_sync, worker)
            return
        self._overrun(worker, head)

    def _overrun(self, worker: WorkerHandle, job: Job) -> None:
        """``job`` is past its timeout plus the grace: fail it, kill its worker.

        Jobs the worker had not started go back to the queue now, for the
        other workers; the ones it had started follow the crash rules.
        """
        job.timer = None
        if worker.exited.is_set():
            return
        worker.channel.read_pending()  # a result may have arrived just now
        if job.ident not in worker.jobs:
            return
        del worker.jobs[job.ident]
        self._release(worker, job)
        if not job.future.done():
            message = (
                f"{job.fn_name} exceeded its timeout of {job.timeout:g} s; its worker process "
                f"{worker.pid} did not answer within {TIMEOUT_GRACE:g} s more and was killed"
            )
            job.future.set_result(([], TaskTimeoutError(message), 0.0))
        self._kill(worker, f"killed because {job.fn_name} overran its timeout")
        # A plain job that overran was the one running: all others waited.
        self._requeue_unstarted(worker, head_ran=job.is_async)
        self._replace()
        self._schedule_dispatch()

    def _requeue_unstarted(self, worker: WorkerHandle, *, head_ran: bool = True) -> None:
        """Queue again the jobs ``worker`` cannot have started.

        Coroutine jobs say STARTED; plain ones run in order, so only the
        oldest may have started (``head_ran``).
        """
        head = self._sync_head(worker) if head_ran else None

        def unstarted(job: Job) -> bool:
            if job.future.done():
                return False
            return not job.started if job.is_async else job is not head

        unstarted_jobs = [job for job in worker.jobs.values() if unstarted(job)]
        for job in reversed(unstarted_jobs):
            del worker.jobs[job.ident]
            self._release(worker, job)
            job.attempts -= 1  # it never ran: not a retry
            self._pending.appendleft(job)

    def _cancel_timer(self, job: Job) -> None:
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None

    def _cancel_worker_timers(self, worker: WorkerHandle) -> None:
        for timer in (worker.sync_timer, worker.init_timer):
            if timer is not None:
                timer.cancel()
        worker.sync_timer = worker.init_timer = None

    def _release(self, worker: WorkerHandle, job: Job) -> None:
        job.worker = None
        self._cancel_timer(job)
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
        # While a worker is starting, nobody else queues work beyond what it
        # can start now: the new worker will take it in a few milliseconds.
        self._starting = any(w.accepting and not w.ready for w in self._workers)
        while pending:
            job = pending[0]
            if job.future.done():
                pending.popleft()
                continue
            worker = self._pick(job)
            if worker is None:
                return
            pending.popleft()
            if job.claim is not None and not job.claim():
                job.future.cancel()
                continue
            self._send_job(worker, job)

    def _pick(self, job: Job) -> WorkerHandle | None:
        best: WorkerHandle | None = None
        best_key: tuple[int, int] = (0, 0)
        for worker in self._workers:
            if not worker.ready or not worker.accepting or not self._has_room(worker, job):
                continue
            # Coroutines avoid workers busy with plain functions.
            key = (worker.sync_jobs if job.is_async else 0, len(worker.jobs))
            if best is None or key < best_key:
                best, best_key = worker, key
        return best

    def _has_room(self, worker: WorkerHandle, job: Job) -> bool:
        limit = self._max_tasks
        if limit is not None and worker.assigned and worker.assigned + job.ncalls > limit:
            return False
        if job.is_async:
            calls = worker.async_calls
            # With a timeout, hand over only what starts at once.
            prefetch = job.timeout is None and not self._starting
            room = 2 * self._concurrency if prefetch else self._concurrency
            return calls == 0 or calls + job.ncalls <= room
        if self._starting:
            return worker.sync_jobs == 0
        if worker.sync_jobs < 2:
            return True
        return worker.sync_estimate + job.ncalls * self._cost <= _SYNC_QUEUE_SECONDS

    def _send_job(self, worker: WorkerHandle, job: Job) -> None:
        job.attempts += 1
        job.worker = worker
        job.started = False
        worker.jobs[job.ident] = job
        worker.assigned += job.ncalls
        if job.is_async:
            worker.async_calls += job.ncalls
            if job.timeout is not None:
                rounds = -(-job.ncalls // self._concurrency)
                job.timer = self._loop.call_later(
                    job.timeout * rounds + TIMEOUT_GRACE, self._overrun, worker, job
                )
        else:
            if not worker.sync_jobs:
                worker.sync_clock = self._loop.time()
            worker.sync_jobs += 1
            job.estimate = job.ncalls * self._cost if self._cost != math.inf else 0.0
            worker.sync_estimate += job.estimate
            self._arm_sync(worker)
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
