"""DaskPool on a real LocalCluster: LoopPool's semantics on Dask.

One synchronous LocalCluster (2 worker processes on 127.0.0.1) serves the
whole session; each test connects its own asynchronous Client (6-16 ms),
which keeps the suite fast. Skipped when the ``dask`` extra is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncconc import (
    DaskPool,
    LoopPool,
    PicklingError,
    PoolBackend,
    PoolClosedError,
    PoolError,
    TaskTimeoutError,
    WorkerCrashedError,
    partial_sum,
    split_range,
)
from tests.pool._dask_tasks import AsyncSleeper, async_sleep_report_cancel, counting, dask_setting
from tests.pool._support import Beacon, wait_gone
from tests.pool._tasks import (
    TaskFailedError,
    async_add,
    async_sleep,
    boom,
    crash_once,
    inc,
    init_fail,
    kill_self,
    returns_coroutine,
    running_loop_module,
    sleep_then,
    spin,
)

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from asyncconc.pool._dask_connect import CPU_RESOURCE, QUIET_CONFIG  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    # Module-scoped: its scheduler runs in threads of this process, and left
    # running for the rest of the session it was CPU in other tests' figures
    # (tests/test_gui.py's idle window failed under load).
    # allowed-failures 0 as a pool-owned cluster has, so that a worker death
    # reaches the pool at once; dashboard on 127.0.0.1:0 (None would bind 8787).
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=5,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            resources={CPU_RESOURCE: 1},
        ) as local,
    ):
        yield local


@pytest.fixture
async def client(cluster: Any) -> AsyncIterator[Any]:
    async with distributed.Client(cluster.scheduler_address, asynchronous=True) as connected:
        await connected.wait_for_workers(2, timeout=60)
        yield connected


async def _sum(pool: PoolBackend, n: int) -> int:
    # Typed against the Protocol: mypy checks that both pools satisfy it.
    return sum([part async for part in pool.starmap(partial_sum, split_range(1, n + 1, 8))])


async def test_results_equal_the_local_pools(client: Any) -> None:
    pools: list[PoolBackend] = [LoopPool(2), DaskPool(client)]
    totals = []
    squares = []
    for pool in pools:
        async with pool:
            totals.append(await _sum(pool, 200_000))
            squares.append([x async for x in pool.map(inc, range(1000))])
            unordered = sorted([x async for x in pool.map(inc, range(50), ordered=False)])
            assert unordered == list(range(1, 51))
    assert totals == [200_000 * 200_001 // 2] * 2
    assert squares[0] == squares[1] == list(range(1, 1001))


async def test_plain_and_coroutine_functions(client: Any) -> None:
    async with DaskPool(client) as pool:
        assert pool.workers == 2
        assert await pool.submit(inc, 41) == 42
        assert await pool.submit(async_add, 2, 3) == 5
        assert [x async for x in pool.starmap(async_add, [(i, i) for i in range(40)])] == [
            2 * i for i in range(40)
        ]
        # Coroutines run on asyncconc's own loop in the worker, uvloop when installed.
        expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        assert (await pool.submit(running_loop_module)).startswith(expected)


async def test_coroutines_share_each_workers_loop_concurrently(client: Any) -> None:
    # 64 x 0.2 s on 2 workers x 16 at once is 0.4 s ideal; one at a time would be 12.8 s.
    async with DaskPool(client, concurrency=16) as pool:
        start = time.perf_counter()
        got = [x async for x in pool.starmap(async_sleep, [(0.2, i) for i in range(64)])]
        elapsed = time.perf_counter() - start
    assert got == list(range(64))
    assert elapsed < 6.0


@pytest.mark.parametrize(
    "sleeper",
    [functools.partial(async_sleep, 0.25), AsyncSleeper(0.25)],
    ids=["partial-of-async-def", "object-with-async-call"],
)
async def test_coroutine_callables_run_on_the_workers_loop_as_in_the_local_pool(
    client: Any, sleeper: Callable[[int], Awaitable[int]]
) -> None:
    # Told apart as LoopPool tells them (is_coroutine_callable): 48 x 0.25 s
    # take ~0.5 s on 2 workers x 16 at once; taken for plain functions they
    # would run one at a time per worker (the CPU resource): 6 s.
    async with DaskPool(client, concurrency=16) as pool:
        assert await pool.submit(sleeper, 7) == 7
        start = time.perf_counter()
        got = [x async for x in pool.map(sleeper, range(48))]
        elapsed = time.perf_counter() - start
        # A plain function that returns a coroutine is awaited, as LoopPool does.
        assert await pool.submit(returns_coroutine, 40) == 42
    assert got == list(range(48))
    assert elapsed < 4.0


async def test_exception_keeps_its_type_and_the_worker_traceback(client: Any) -> None:
    async with DaskPool(client) as pool:
        with pytest.raises(TaskFailedError, match="bad value 3") as info:
            await pool.submit(boom, 3)
        assert "_inner_failure" in "".join(info.value.__notes__)
        seen: list[int] = []

        async def consume() -> None:
            async for value in pool.map(boom, range(10), chunksize=1):
                seen.append(value)

        with pytest.raises(TaskFailedError):
            await consume()
        assert seen == [0, 1, 2]


async def test_unpicklable_function_is_a_pickling_error_naming_it(client: Any) -> None:
    async with DaskPool(client) as pool:
        with pytest.raises(PicklingError, match="lambda"):
            await pool.submit(lambda: 1)


async def test_worker_killed_mid_map_fails_without_retries(client: Any, tmp_path: Path) -> None:
    async with DaskPool(client) as pool:
        with pytest.raises(WorkerCrashedError, match="kill_self"):
            async for _ in pool.map(kill_self, [str(tmp_path / "dead")]):
                pass
    await client.wait_for_workers(2, timeout=60)  # the nanny restarts it


async def test_worker_killed_mid_map_completes_with_retries(client: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "crashed")
    async with DaskPool(client, retries=1) as pool:
        got = [x async for x in pool.map(crash_once, [marker])]
        assert len(got) == 1
        assert Path(marker).exists()  # it did crash once
        assert await pool.submit(inc, 1) == 2
    await client.wait_for_workers(2, timeout=60)


async def test_unreachable_scheduler_is_a_pool_error_naming_it() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    start = time.perf_counter()
    with pytest.raises(PoolError, match=f"127.0.0.1:{port}"):
        async with DaskPool(address, connect_timeout=1.0):
            pass
    assert time.perf_counter() - start < 10.0


async def test_cancelling_submit_cancels_the_running_coroutine(client: Any) -> None:
    async with Beacon() as beacon, DaskPool(client) as pool:
        task = asyncio.ensure_future(pool.submit(async_sleep_report_cancel, beacon.port, 60))
        await beacon.wait()  # running on a worker
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await beacon.wait() == -1  # the worker's coroutine saw CancelledError


async def test_leaving_map_early_cancels_running_coroutines(client: Any) -> None:
    async with Beacon() as beacon, DaskPool(client, concurrency=2) as pool:
        args = [(beacon.port, 0.0)] + [(beacon.port, 60)] * 3
        async with contextlib.aclosing(pool.starmap(async_sleep_report_cancel, args)) as it:  # type: ignore[type-var]
            async for _ in it:
                # Leave only once every call has begun on a worker: a call still
                # queued in Dask is cancelled before it starts and reports nothing.
                starts = [await beacon.wait() for _ in range(4)]
                assert -1 not in starts
                break
        cancels = [await beacon.wait() for _ in range(3)]
        assert cancels == [-1, -1, -1]


async def test_map_reads_an_endless_generator_lazily(client: Any) -> None:
    source = counting()
    async with DaskPool(client) as pool:
        got = []
        async with contextlib.aclosing(pool.map(inc, source)) as it:  # type: ignore[type-var]
            async for value in it:
                got.append(value)
                if len(got) == 100:
                    break
    assert got == list(range(2, 102))
    # A bounded window: a few chunks per worker, chunks of at most 65536.
    assert source.taken < 10 * 65536


async def test_task_timeout_bounds_coroutines_and_plain_functions(client: Any) -> None:
    async with DaskPool(client, task_timeout=0.5) as pool:
        start = time.perf_counter()
        with pytest.raises(TaskTimeoutError, match="async_sleep"):
            await pool.submit(async_sleep, 60)
        with pytest.raises(TaskTimeoutError, match="spin"):
            await pool.submit(spin, 60)
        assert time.perf_counter() - start < 20.0
        # The slot was freed: the pool still runs plain functions at once.
        assert [x async for x in pool.map(inc, range(4))] == [1, 2, 3, 4]


async def test_failing_initializer_breaks_the_pool(client: Any) -> None:
    async with DaskPool(client, initializer=init_fail) as pool:
        with pytest.raises(PoolError, match="initializer") as info:
            await pool.submit(inc, 1)
        assert isinstance(info.value.__cause__, RuntimeError)


async def test_closed_pool_refuses_work_and_leaves_a_passed_client_open(client: Any) -> None:
    pool = DaskPool(client)
    async with pool:
        pass
    with pytest.raises(PoolClosedError):
        await pool.submit(inc, 1)
    assert client.status == "running"
    await pool.aclose()  # idempotent


@pytest.mark.slow
@pytest.mark.parametrize("start_method", [None, "spawn", "fork"])
# Python 3.12+ warns when a process with threads forks (Dask forks from one of its own).
@pytest.mark.filterwarnings("ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")
async def test_pool_owned_local_cluster_starts_and_stops_without_orphans(
    start_method: Any,
) -> None:
    async with DaskPool(workers=1, start_method=start_method) as pool:
        assert await pool.submit(inc, 1) == 2
        client = pool.client
        pids = list((await client.run(os.getpid)).values())
        assert len(pids) == 1
        # Dask's housekeeping runs less often in the pool's own workers.
        settings = await client.run(dask_setting, "distributed.worker.profile.interval")
        assert list(settings.values()) == [QUIET_CONFIG["distributed.worker.profile.interval"]]
        methods = await client.run(dask_setting, "distributed.worker.multiprocessing-method")
        assert list(methods.values()) == [start_method or "forkserver"]
    assert client.status == "closed"
    assert wait_gone(pids) == []


def _forkserver_pid() -> int | None:
    """The pid of multiprocessing's fork server in this process, if one runs."""
    import multiprocessing.forkserver

    pid: int | None = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    return pid


@pytest.mark.slow
async def test_default_start_forks_the_workers_from_a_fork_server_gone_with_the_pool() -> None:
    import psutil  # type: ignore[import-untyped,unused-ignore]

    assert _forkserver_pid() is None  # nothing else in this process runs one
    async with DaskPool(workers=2) as pool:
        assert await _sum(pool, 1_000_000) == 1_000_000 * 1_000_001 // 2
        server = _forkserver_pid()
        assert server is not None
        # Safe to fork from: a child of this process that runs one thread.
        assert psutil.Process(server).ppid() == os.getpid()
        assert psutil.Process(server).num_threads() == 1
        workers = await pool.client.run(os.getpid)
        parents = await pool.client.run(os.getppid)
        assert set(parents.values()) == {server}
        assert await pool.submit(async_add, 2, 3) == 5  # the workers' own loops run
    assert _forkserver_pid() is None
    assert wait_gone([server, *workers.values()]) == []


@pytest.mark.slow
async def test_the_fork_server_outlives_a_pool_only_while_another_uses_it() -> None:
    assert _forkserver_pid() is None
    async with DaskPool(workers=1) as first:
        server = _forkserver_pid()
        worker = await first.client.run(os.getpid)
        async with DaskPool(workers=1) as second:
            assert _forkserver_pid() == server
            assert await second.submit(inc, 1) == 2
        # Stopping the server now would tell the first pool's nanny that its
        # worker died (the server reports its children's exit codes).
        assert _forkserver_pid() == server
        assert await first.submit(inc, 2) == 3
        assert await first.client.run(os.getpid) == worker
    assert _forkserver_pid() is None
    assert server is not None
    assert wait_gone([server]) == []


@pytest.mark.slow
async def test_a_fork_server_the_program_started_is_left_running() -> None:
    import multiprocessing.forkserver

    assert _forkserver_pid() is None
    multiprocessing.forkserver.ensure_running()
    server = _forkserver_pid()
    try:
        async with DaskPool(workers=1) as pool:
            parents = await pool.client.run(os.getppid)
            assert list(parents.values()) == [server]
        assert _forkserver_pid() == server
        assert server is not None
        assert wait_gone([server], timeout=0.5) == [server]
    finally:
        multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
    assert _forkserver_pid() is None


def test_start_method_is_checked_and_only_for_a_pool_owned_cluster() -> None:
    with pytest.raises(ValueError, match="start_method"):
        DaskPool(start_method="vfork")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool-owned"):
        DaskPool("tcp://127.0.0.1:8786", start_method="fork")


async def test_error_leaving_the_block_cancels_running_coroutines(client: Any) -> None:
    tasks: list[asyncio.Future[Any]] = []

    async def fail_inside(port: int) -> None:
        async with DaskPool(client) as pool:
            tasks.append(asyncio.ensure_future(pool.submit(async_sleep_report_cancel, port, 60)))
            await beacon.wait()
            raise ZeroDivisionError

    async with Beacon() as beacon:
        with pytest.raises(ZeroDivisionError):
            await fail_inside(beacon.port)
        assert await beacon.wait() == -1  # cancelled on the worker, not left running
        with pytest.raises(PoolClosedError):
            await tasks[0]


def test_import_asyncconc_does_not_import_distributed() -> None:
    code = "import sys, asyncconc; asyncconc.DaskPool; print('distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_extra_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "from asyncconc import DaskPool, PoolError\n"
        "try:\n    DaskPool()\nexcept PoolError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'asyncconc[dask]'" in out.stdout


async def test_scheduler_without_workers_is_a_pool_error_naming_it() -> None:
    async with (
        distributed.Scheduler(host="127.0.0.1", port=0, dashboard_address="127.0.0.1:0") as sched,
    ):
        start = time.perf_counter()
        with pytest.raises(PoolError, match="has no workers"):
            async with DaskPool(sched.address, connect_timeout=1.0):
                pass
        assert time.perf_counter() - start < 10.0


async def test_task_timeout_bounds_a_plain_call_blocked_in_c_code_from_the_caller(
    client: Any,
) -> None:
    # time.sleep cannot be interrupted in a Dask thread: the caller's bound
    # (timeout + 2 s after the worker reports the start) ends the wait.
    async with DaskPool(client, task_timeout=0.5) as pool:
        start = time.perf_counter()
        with pytest.raises(TaskTimeoutError, match="bounded by the caller"):
            await pool.submit(sleep_then, 6.0, "late")
        assert time.perf_counter() - start < 5.5


async def test_terminate_fails_waiting_calls_and_stops_their_coroutines(client: Any) -> None:
    async with Beacon() as beacon:
        async with DaskPool(client) as pool:
            task = asyncio.ensure_future(pool.submit(async_sleep_report_cancel, beacon.port, 60))
            await beacon.wait()
            pool.terminate()
            with pytest.raises(PoolClosedError):
                await task
            with pytest.raises(PoolClosedError):
                await pool.submit(inc, 1)
        # Leaving the block removed the pool's plugin: its loop cancelled the coroutine.
        assert await beacon.wait() == -1
