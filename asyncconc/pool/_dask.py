"""DaskPool: LoopPool's calls and semantics on a Dask distributed cluster.

A sibling class rather than a ``backend=`` argument of :class:`LoopPool`:
the two share every call (see :class:`asyncconc.pool._backend.PoolBackend`,
checked by mypy and a test) but not their constructors (an address, a
``Client`` or a pool-owned ``LocalCluster``, and a connect timeout here;
start method and per-worker task limits there), and a backend switch would
make every LoopPool import and option check know about Dask.

``distributed`` is imported only when a DaskPool is created, so
``import asyncconc`` stays light (distributed alone is 0.21 s, 46 MiB).

What Dask does not give and this module adds (measured; see the issue):

* our own event loop per worker for coroutines (:mod:`._dask_worker`);
* plain functions one per worker process, through the worker resource
  :data:`CPU_RESOURCE` (when every worker advertises it);
* ``retries`` as crash resubmission: a chunk whose worker died
  (``KilledWorker``) is submitted again under a new key;
* laziness: a bounded window of chunks in flight, chunks sized for Dask's
  per-task cost (1.5-10 ms, against 0.05 ms locally);
* cancellation that reaches running coroutines on the workers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import pickle
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from types import TracebackType
from typing import Any, Literal

from asyncconc._errors import (
    PicklingError,
    PoolClosedError,
    PoolError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from asyncconc._runner import resolve_loop
from asyncconc.pool._backend import ChunkPolicy, map_window
from asyncconc.pool._dask_chunks import Outcome, decode
from asyncconc.pool._dask_connect import (
    CPU_RESOURCE,
    START_METHODS,
    Connection,
    connect,
    release,
    require_distributed,
    survey_workers,
)
from asyncconc.pool._worker import describe, is_coroutine_callable

__all__ = ["DaskPool"]

StartMethod = Literal["spawn", "forkserver", "fork"]

# A plain-function chunk aims at 50 ms of work (Dask costs 1.5-10 ms a task);
# a coroutine chunk holds half a worker's concurrency.
_CHUNKS = ChunkPolicy(target=0.05, max_chunk=65536, coroutine_share=0.5)
# How long past its timeout a plain call may run before the caller gives up.
_TIMEOUT_GRACE = 2.0
# Thread slots per worker of a pool-owned cluster: one for plain functions
# (the CPU resource) and the rest for coroutine chunks, which only wait there.
_COROUTINE_SLOTS = 4


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(slots=True, eq=False)
class _Chunk:
    fn_name: str
    payload: bytes
    ncalls: int
    is_async: bool
    token: str = ""
    future: Any = None
    attempts: int = 0
    task: asyncio.Task[Outcome] | None = field(default=None)
    timeout: float | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)


class DaskPool:
    """LoopPool's calls on a Dask cluster.

    ``address`` selects the cluster: a scheduler address
    (``"tcp://HOST:8786"``), an existing asynchronous ``distributed.Client``
    (never closed by the pool), or ``None``: the pool then starts and owns a
    ``LocalCluster`` of ``workers`` processes on 127.0.0.1.

    The calls and their semantics are LoopPool's: :meth:`submit`,
    :meth:`map` and :meth:`starmap` (lazy input, bounded work in flight,
    ``ordered=``), ``retries``, ``task_timeout``, ``initializer``,
    :meth:`aclose` and :meth:`terminate`. Differences, all from Dask:

    * ``retries`` counts worker deaths seen as ``KilledWorker``. A pool-owned
      cluster sets ``distributed.scheduler.allowed-failures`` to 0, so the
      first death is reported, as locally. An external scheduler applies its
      own setting first (Dask's default 3: a task is re-run silently after up
      to 3 worker deaths before ``retries`` start counting).
    * ``task_timeout`` cancels a coroutine on the worker's loop. A plain
      function is interrupted between Python bytecodes in its Dask thread,
      which frees the slot; for a call blocked in C code the caller raises
      :class:`TaskTimeoutError` once the worker has run it for the timeout
      plus 2 s, and the call holds its thread until it returns.
    * A running plain function cannot be stopped by cancellation: it finishes
      on the worker and its result is dropped (as locally).

    ``connect_timeout`` bounds reaching the scheduler and waiting for its
    first worker: past it, :class:`PoolError` names the address.

    A pool-owned cluster only: ``start_method`` is how its worker processes
    start. ``None`` means ``"forkserver"``: multiprocessing's fork server,
    started as the pool opens, forks each worker; a server the pool started
    is stopped when the last pool using it closes (one the program started
    is left running). Which server, by a rule checked as the pool opens: if
    the program runs exactly one OS thread then (``/proc/self/task``, Linux;
    a program's first pool usually does, a later one does not: Dask's
    offload thread stays), the server is a clean fork of the program, which
    has ``distributed`` imported already (start to first result 0.3-0.6 s
    here, against 1.0-1.6 s). The fork holds no thread to deadlock on;
    signal handlers the program installed are reset, the program's
    descriptors other than 0-2 become ``/dev/null`` in the server and its
    workers (a socket the program closes really closes), the program's
    garbage is frozen out of the collector there, and the server dies with
    the program (``PR_SET_PDEATHSIG``). The workers' ``__main__`` is then the
    program's own module as it was when the pool opened (its top level is
    not run again), and their memory starts as a copy of the program's:
    shared pages, yet counted in each worker's RSS, which Dask's memory
    limits watch. Otherwise (another thread, OpenBLAS's threads included:
    numpy installed means ``import distributed`` starts them unless
    ``OPENBLAS_NUM_THREADS=1``; not Linux; or a Python whose private
    fork-server layout asyncconc does not know: 3.14 adds a key) the server
    is a fresh single-threaded interpreter that imports ``distributed``
    once (as Dask preloads it) and each worker imports the main module as
    ``__mp_main__``. ``"spawn"`` (Dask's default) starts each worker as a
    new interpreter that imports ``distributed`` itself (0.5-0.9 s of CPU
    each here). ``"fork"`` copies
    this process instead (the fastest start), with fork's costs: it forks a
    process that runs threads (Dask's own among them), which can deadlock
    the child if another thread holds a lock at that moment, and Python
    3.12+ warns about it (``DeprecationWarning``); the workers start as
    copies of this process's memory. A worker the nanny restarts after the
    pool has started uses Dask's setting again (``spawn`` unless
    configured). A pool-owned cluster also makes Dask's housekeeping less
    frequent (profiler, event-loop tick, system and memory monitors: see
    :data:`asyncconc.pool._dask_connect.QUIET_CONFIG`), which measured 6% of
    a core per idle worker and took the GIL from CPU-bound tasks.
    """

    def __init__(
        self,
        address: str | Any | None = None,
        *,
        workers: int = 2,
        concurrency: int = 16,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        retries: int = 0,
        task_timeout: float | None = None,
        connect_timeout: float = 10.0,
        loop: str = "auto",
        shutdown_timeout: float = 10.0,
        start_method: StartMethod | None = None,
    ) -> None:
        require_distributed()
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        if task_timeout is not None and not task_timeout > 0:
            raise ValueError(f"task_timeout must be positive, not {task_timeout}")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, not {connect_timeout}")
        if start_method is not None:
            if start_method not in START_METHODS:
                raise ValueError(
                    f"start_method must be one of {', '.join(map(repr, START_METHODS))}, "
                    f"not {start_method!r}"
                )
            if address is not None:
                raise ValueError("start_method applies only to a pool-owned cluster (no address)")
        self._start_method = start_method
        self._address = address
        self._local_workers = workers
        self._concurrency = concurrency
        self._retries = retries
        self._task_timeout = task_timeout
        self._connect_timeout = connect_timeout
        self._shutdown_timeout = shutdown_timeout
        self._loop_kind = resolve_loop(loop)
        self._init: bytes | None = None
        if initializer is not None:
            try:
                self._init = pickle.dumps((initializer, tuple(initargs)))
            except Exception as exc:
                raise PicklingError(
                    f"cannot send the initializer {describe(initializer)} to the workers: {exc}"
                ) from exc
        self._state = _State.NEW
        self._name = f"asyncconc-{uuid.uuid4().hex[:12]}"
        self._conn = Connection()
        self._size = 0
        self._cpu_resource = False
        self._chunks: set[_Chunk] = set()
        self._by_token: dict[str, _Chunk] = {}
        self._broken: PoolError | None = None

    @property
    def workers(self) -> int:
        """How many Dask workers the scheduler had when the pool started."""
        return self._size

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` in use (for its dashboard link, logs...)."""
        return self._conn.client

    # -- life cycle ----------------------------------------------------------

    async def __aenter__(self) -> DaskPool:
        if self._state is not _State.NEW:
            raise PoolClosedError("a DaskPool can be entered only once")
        self._state = _State.OPEN
        try:
            await self._open()
        except BaseException:
            self._state = _State.CLOSED
            await self._release()
            raise
        return self

    async def _open(self) -> None:
        conn = self._conn
        await connect(
            conn,
            self._address,
            local_workers=self._local_workers,
            threads=1 + _COROUTINE_SLOTS,
            connect_timeout=self._connect_timeout,
            start_method=self._start_method,
        )
        from asyncconc.pool._dask_worker import LoopPlugin

        plugin = LoopPlugin(self._name, self._loop_kind, self._concurrency, self._init)
        await conn.client.register_plugin(plugin, name=self._name)
        self._size, self._cpu_resource = await survey_workers(conn.client)
        conn.client.subscribe_topic(f"{self._name}-started", self._on_started)

    def _on_started(self, event: tuple[float, str]) -> None:
        chunk = self._by_token.get(event[1])
        if chunk is not None:
            chunk.started.set()

    async def _release(self) -> None:
        client = self._conn.client
        if client is not None and client.status == "running":
            with contextlib.suppress(Exception):  # best effort: already gone
                client.unsubscribe_topic(f"{self._name}-started")
        await release(self._conn, self._name, self._shutdown_timeout)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.aclose()
        else:
            self._state = _State.CLOSED  # what the drivers see as the futures are cancelled
            try:
                await self._cancel_remote(list(self._chunks))
            finally:
                self.terminate()
                await self._release()

    async def aclose(self) -> None:
        """Wait for outstanding tasks, then release what the pool opened.

        Idempotent. A pool-owned client and cluster are closed; a Client you
        passed in is left open. If cancelled while waiting, outstanding tasks
        are cancelled on the cluster before the exception propagates.
        """
        if self._state is _State.CLOSED:
            await self._release()
            return
        self._state = _State.CLOSING
        try:
            while tasks := [c.task for c in self._chunks if c.task is not None]:
                await asyncio.wait(tasks)
        except BaseException:
            self._state = _State.CLOSED
            try:
                await self._cancel_remote(list(self._chunks))
            finally:
                self.terminate()
            raise
        finally:
            self._state = _State.CLOSED
            await self._release()

    def terminate(self) -> None:
        """Refuse new work and fail outstanding tasks with PoolClosedError now.

        Their Dask futures are released (queued tasks are dropped by the
        scheduler); leaving the ``async with`` block (or :meth:`aclose`)
        then cancels running coroutines on the workers and closes what the
        pool opened.
        """
        self._state = _State.CLOSED
        for chunk in list(self._chunks):
            if chunk.task is not None:
                chunk.task.cancel()
            if chunk.future is not None:
                chunk.future.release()
        self._chunks.clear()

    async def _cancel_remote(self, chunks: list[_Chunk]) -> None:
        """Cancel these chunks' Dask futures and their running coroutines."""
        client = self._conn.client
        futures = [c.future for c in chunks if c.future is not None]
        tokens = [c.token for c in chunks if c.is_async and c.token]
        if client is None or client.status != "running" or not futures:
            return
        from asyncconc.pool._dask_worker import cancel_tokens

        try:
            async with asyncio.timeout(self._shutdown_timeout):
                await client.cancel(futures)
                if tokens:
                    await client.run(cancel_tokens, self._name, tokens, on_error="ignore")
        except Exception:  # best effort: the cluster may be gone
            pass

    # -- chunks ---------------------------------------------------------------

    def _new_chunk(
        self,
        fn: Callable[..., Any],
        arglist: list[tuple[Any, ...]],
        kwargs: dict[str, Any] | None,
        timeout: float | None,
        is_async: bool,
    ) -> _Chunk:
        if self._broken is not None:
            raise PoolError(str(self._broken)) from self._broken.__cause__
        if self._state is not _State.OPEN:
            raise PoolClosedError(f"the pool is {self._state.value}")
        try:
            payload = pickle.dumps(
                (fn, arglist, kwargs, timeout, is_async), protocol=pickle.HIGHEST_PROTOCOL
            )
        except Exception as exc:
            raise PicklingError(
                f"cannot send {describe(fn)} and its arguments to a worker: {exc}"
            ) from exc
        chunk = _Chunk(describe(fn), payload, len(arglist), is_async, timeout=timeout)
        self._send(chunk)
        chunk.task = asyncio.ensure_future(self._drive(chunk))
        self._chunks.add(chunk)
        chunk.task.add_done_callback(lambda _: self._chunks.discard(chunk))
        return chunk

    def _send(self, chunk: _Chunk) -> None:
        from asyncconc.pool._dask_worker import run_chunk

        # The key's prefix is what the dashboard groups tasks by: the function.
        short = chunk.fn_name.rsplit(".", 1)[-1].replace("-", "_")
        self._by_token.pop(chunk.token, None)
        chunk.token = f"{short}-{uuid.uuid4().hex}"
        chunk.started = asyncio.Event()
        if chunk.timeout is not None and not chunk.is_async:
            self._by_token[chunk.token] = chunk
        resources = {CPU_RESOURCE: 1} if self._cpu_resource and not chunk.is_async else None
        chunk.attempts += 1
        chunk.future = self._conn.client.submit(
            run_chunk,
            self._name,
            chunk.token,
            chunk.payload,
            key=chunk.token,
            pure=False,
            resources=resources,
        )

    async def _drive(self, chunk: _Chunk) -> Outcome:
        try:
            return await self._drive_attempts(chunk)
        finally:
            self._by_token.pop(chunk.token, None)

    async def _drive_attempts(self, chunk: _Chunk) -> Outcome:
        from distributed.scheduler import KilledWorker

        while True:
            try:
                if chunk.timeout is not None and not chunk.is_async:
                    data = await self._bounded(chunk, chunk.timeout)
                else:
                    data = await chunk.future
            except TaskTimeoutError as exc:
                with contextlib.suppress(Exception):  # best effort: the cluster may be gone
                    async with asyncio.timeout(self._shutdown_timeout):
                        await self._conn.client.cancel([chunk.future])
                return ([], exc, 0.0)
            except KilledWorker as exc:
                if chunk.attempts <= self._retries and self._state is not _State.CLOSED:
                    self._send(chunk)
                    continue
                return (
                    [],
                    WorkerCrashedError(f"the Dask worker running {chunk.fn_name} died: {exc}"),
                    0.0,
                )
            except asyncio.CancelledError:
                # terminate() cancelled this driver (our own cancel): the
                # caller gets PoolClosedError, as LoopPool's callers do.
                if self._state is _State.CLOSED:
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    return ([], PoolClosedError("the pool was terminated"), 0.0)
                raise
            except concurrent.futures.CancelledError as exc:
                # Dask's FutureCancelledError: the key was cancelled on the
                # cluster, by this pool's close or by someone else.
                if self._state is _State.CLOSED:
                    return ([], PoolClosedError("the pool was closed"), 0.0)
                failure = PoolError(f"the Dask task running {chunk.fn_name} was cancelled")
                failure.__cause__ = exc
                return ([], failure, 0.0)
            return self._decode(chunk, data)

    async def _bounded(self, chunk: _Chunk, timeout: float) -> bytes:
        """The chunk's result, bounded on this side once the worker says it started.

        The worker interrupts an overrunning Python call itself; this bound
        (the timeout per call plus 2 s) catches calls blocked in C code. Such
        a call keeps its worker's thread until it returns.
        """
        result = asyncio.ensure_future(_result(chunk.future))
        started = asyncio.ensure_future(chunk.started.wait())
        try:
            await asyncio.wait({result, started}, return_when=asyncio.FIRST_COMPLETED)
            if not result.done():
                bound = timeout * chunk.ncalls + _TIMEOUT_GRACE
                done, _ = await asyncio.wait({result}, timeout=bound)
                if not done:
                    raise TaskTimeoutError(
                        f"{chunk.fn_name} exceeded its timeout of {timeout:g} s (bounded by the "
                        "caller: the call may still be running on its Dask worker)"
                    )
            data: bytes = result.result()
            return data
        finally:
            started.cancel()
            result.cancel()

    def _decode(self, chunk: _Chunk, data: bytes) -> Outcome:
        outcome, broken = decode(chunk.fn_name, data)
        if broken is not None:
            self._broken = broken
        return outcome

    async def _outcome(self, chunk: _Chunk) -> Outcome:
        """The chunk's outcome; PoolClosedError if terminate() cancelled it unstarted."""
        assert chunk.task is not None
        try:
            return await asyncio.shield(chunk.task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if chunk.task.cancelled() and me is not None and not me.cancelling():
                raise PoolClosedError("the pool was terminated") from None
            raise

    async def _abandon(self, chunks: list[_Chunk]) -> None:
        for chunk in chunks:
            if chunk.task is not None:
                chunk.task.cancel()
            self._chunks.discard(chunk)
        await self._cancel_remote(chunks)

    # -- public calls --------------------------------------------------------

    async def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on a Dask worker and return its result.

        Raises as :meth:`LoopPool.submit` does. Cancelling the caller cancels
        the Dask task; a running coroutine is cancelled on its worker.
        """
        is_async = is_coroutine_callable(fn)
        chunk = self._new_chunk(fn, [args], kwargs or None, self._task_timeout, is_async)
        try:
            results, error, _ = await self._outcome(chunk)
        except asyncio.CancelledError:
            await self._abandon([chunk])
            raise
        if error is not None:
            raise error
        return results[0]

    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        """``fn(item)`` for every item, lazily, as :meth:`LoopPool.map`.

        Chunks: for coroutine functions ``concurrency // 2`` items; for plain
        functions 1 at first, growing until a chunk takes about 50 ms (Dask's
        per-task cost is 1.5-10 ms). At most a few chunks per worker are in
        flight, so an endless generator works.
        """
        return self._map(fn, iterable, False, chunksize, ordered, timeout)

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
        inflight: deque[_Chunk] = deque()
        exhausted = False
        try:
            while True:
                while not exhausted and len(inflight) < window:
                    size = sizer.size
                    chunk_items = list(islice(items, size))
                    if len(chunk_items) < size:
                        exhausted = True
                    if not chunk_items:
                        break
                    arglist = (
                        [tuple(a) for a in chunk_items] if star else [(a,) for a in chunk_items]
                    )
                    inflight.append(self._new_chunk(fn, arglist, None, timeout, is_async))
                if not inflight:
                    return
                if ordered:
                    chunk = inflight[0]
                else:
                    tasks = {c.task: c for c in inflight if c.task is not None}
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    chunk = tasks[next(iter(done))]
                results, error, elapsed = await self._outcome(chunk)
                inflight.remove(chunk)
                sizer.observe(len(results), elapsed)
                for result in results:
                    yield result
                if error is not None:
                    raise error
        finally:
            if inflight:
                await self._abandon(list(inflight))


async def _result(future: Any) -> Any:
    return await future
