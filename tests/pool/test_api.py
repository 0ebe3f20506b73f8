"""LoopPool with real worker processes: results, errors, crashes, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # types-psutil is optional
import pytest

from asyncconc import (
    LoopPool,
    PicklingError,
    PoolClosedError,
    PoolError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from tests.pool import _tasks
from tests.pool._support import Beacon, wait_gone


@pytest.fixture
async def pool() -> AsyncIterator[LoopPool]:
    async with LoopPool(2) as running:
        yield running


@pytest.fixture
async def beacon() -> AsyncIterator[Beacon]:
    async with Beacon() as listening:
        yield listening


async def test_submit_runs_plain_function_with_args_and_kwargs(pool: LoopPool) -> None:
    assert await pool.submit(_tasks.add, 2, 3, scale=10) == 50


async def test_submit_runs_coroutine_function(pool: LoopPool) -> None:
    assert await pool.submit(_tasks.async_add, 2, 3) == 5


async def test_work_runs_in_other_processes(pool: LoopPool) -> None:
    pids = await asyncio.gather(*(pool.submit(_tasks.pid) for _ in range(20)))
    assert os.getpid() not in pids
    assert set(pids) <= set(pool.worker_pids())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_workers_run_the_requested_event_loop(loop: str) -> None:
    async with LoopPool(1, loop=loop) as pool:
        module = await pool.submit(_tasks.running_loop_module)
    assert module.startswith(loop)


async def test_preloaded_modules_are_imported_once_by_the_fork_server() -> None:
    async with LoopPool(2, preload=["tests.pool._preloaded"]) as pool:
        answers = {await pool.submit(_tasks.preloaded) for _ in range(4)}
        servers = set(pool.process_pids()) - set(pool.worker_pids())
    assert all(loaded for loaded, _, _ in answers)
    importers = {importer for _, importer, _ in answers}
    assert len(importers) == 1  # once, before the forks; not once per worker
    assert importers <= servers
    assert all(importer != worker for _, importer, worker in answers)


async def test_preloaded_modules_are_imported_by_spawned_workers_before_tasks() -> None:
    async with LoopPool(1, preload=["tests.pool._preloaded"], start_method="spawn") as pool:
        loaded, importer, worker = await pool.submit(_tasks.preloaded)
    assert loaded
    assert importer == worker


@pytest.mark.parametrize("chunksize", [None, 1, 7])
async def test_map_keeps_input_order(pool: LoopPool, chunksize: int | None) -> None:
    results = [r async for r in pool.map(_tasks.square, range(1000), chunksize=chunksize)]
    assert results == [x * x for x in range(1000)]


async def test_starmap_unpacks_arguments_in_order(pool: LoopPool) -> None:
    pairs = [(i, 2 * i) for i in range(500)]
    results = [r async for r in pool.starmap(_tasks.add, pairs)]
    assert results == [3 * i for i in range(500)]


async def test_map_runs_coroutine_functions_concurrently_in_a_worker() -> None:
    # 40 sleeps of 0.5 s on one worker with concurrency 40 take ~0.5 s, not 20 s.
    async with LoopPool(1, concurrency=40) as pool:
        loop = asyncio.get_running_loop()
        start = loop.time()
        args = [(0.5, i) for i in range(40)]
        results = [r async for r in pool.starmap(_tasks.async_sleep, args)]
        assert results == list(range(40))
        assert loop.time() - start < 10


async def test_unordered_map_yields_results_as_they_complete() -> None:
    async with LoopPool(1, concurrency=4) as pool:
        args = [(60.0, "slow"), (0.0, "fast")]
        results = pool.starmap(_tasks.async_sleep, args, ordered=False)
        async with contextlib.aclosing(results):  # type: ignore[type-var]
            first = await anext(results)
        assert first == "fast"
        # Closing the iterator cancelled the slow sleep: the slot is free again.
        assert await pool.submit(_tasks.async_add, 1, 1) == 2


async def test_map_reads_an_endless_generator_lazily(pool: LoopPool) -> None:
    consumed = 0

    def numbers() -> Iterator[int]:
        nonlocal consumed
        for n in itertools.count():
            consumed = n + 1
            yield n

    taken = 0
    results = pool.map(_tasks.inc, numbers())
    async with contextlib.aclosing(results):  # type: ignore[type-var]
        async for value in results:
            assert value == taken + 1
            taken += 1
            if taken == 30_000:
                break
    # Only a few chunks per worker are ever read ahead.
    assert taken <= consumed <= taken + 50_000


async def test_task_exception_is_reraised_with_remote_traceback(pool: LoopPool) -> None:
    with pytest.raises(_tasks.TaskFailedError, match="bad value 3") as info:
        await pool.submit(_tasks.boom, 3)
    notes = "\n".join(info.value.__notes__)
    assert "Remote traceback (worker process" in notes
    assert "_inner_failure" in notes


async def test_map_yields_results_before_the_failing_item(pool: LoopPool) -> None:
    seen: list[int] = []

    async def collect() -> None:
        async for value in pool.map(_tasks.boom, range(10), chunksize=2):
            seen.append(value)

    with pytest.raises(_tasks.TaskFailedError):
        await collect()
    assert seen == [0, 1, 2]


async def test_unpicklable_argument_raises_pickling_error_naming_function(pool: LoopPool) -> None:
    with pytest.raises(PicklingError, match="inc"):
        await pool.submit(_tasks.inc, threading.Lock())  # type: ignore[call-overload]
    assert await pool.submit(_tasks.inc, 1) == 2


async def test_unpicklable_function_raises_pickling_error(pool: LoopPool) -> None:
    with pytest.raises(PicklingError, match="lambda"):
        await pool.submit(lambda: 1)


async def test_unpicklable_result_raises_pickling_error_naming_function(pool: LoopPool) -> None:
    with pytest.raises(PicklingError, match="make_unpicklable"):
        await pool.submit(_tasks.make_unpicklable)
    assert await pool.submit(_tasks.inc, 1) == 2


async def test_worker_killing_itself_fails_its_task_and_is_replaced(
    pool: LoopPool, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    with pytest.raises(WorkerCrashedError, match="SIGKILL"):
        await pool.submit(_tasks.kill_self, str(marker))
    dead = int(marker.read_text())
    results = await asyncio.gather(*(pool.submit(_tasks.pid) for _ in range(10)))
    assert dead not in results
    assert len(pool.worker_pids()) == 2


async def test_worker_sigkilled_mid_task_never_hangs(pool: LoopPool, beacon: Beacon) -> None:
    task = asyncio.create_task(pool.submit(_tasks.announce_then_sleep, beacon.port, 60))
    victim = await beacon.wait()
    os.kill(victim, signal.SIGKILL)
    async with asyncio.timeout(30):
        with pytest.raises(WorkerCrashedError, match=str(victim)):
            await task
    assert await pool.submit(_tasks.inc, 41) == 42


async def test_os_exit_is_retried_when_retries_allow(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    async with LoopPool(2, retries=1) as pool:
        survivor = await pool.submit(_tasks.crash_once, str(marker))
    assert marker.exists()
    assert survivor != int(marker.read_text())


async def test_cancelling_submit_cancels_the_coroutine_in_the_worker(beacon: Beacon) -> None:
    async with LoopPool(1, concurrency=1) as pool:
        task = asyncio.create_task(pool.submit(_tasks.async_announce_then_sleep, beacon.port, 60))
        await beacon.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The only slot is free again, so this does not wait 60 s.
        async with asyncio.timeout(30):
            assert await pool.submit(_tasks.async_add, 20, 22) == 42


async def test_task_timeout_interrupts_coroutines_and_plain_functions() -> None:
    async with LoopPool(1, task_timeout=0.3) as pool:
        with pytest.raises(TaskTimeoutError, match="async_sleep"):
            await pool.submit(_tasks.async_sleep, 60)
        with pytest.raises(TaskTimeoutError, match="sleep_then"):
            await pool.submit(_tasks.sleep_then, 60, None)
        with pytest.raises(TaskTimeoutError):
            await pool.submit(_tasks.spin, 60)
        # The worker lived through it.
        assert await pool.submit(_tasks.inc, 1) == 2


async def test_map_timeout_applies_to_each_call(pool: LoopPool) -> None:
    with pytest.raises(TaskTimeoutError):
        async for _ in pool.starmap(_tasks.sleep_then, [(0, 1), (60, 2)], timeout=0.3):
            pass


async def test_initializer_runs_once_in_every_worker() -> None:
    async with LoopPool(2, initializer=_tasks.init_mark, initargs=("ready",)) as pool:
        marks = await asyncio.gather(*(pool.submit(_tasks.get_initialized) for _ in range(20)))
    assert all(mark == ["ready"] for mark in marks)


async def test_failing_initializer_breaks_the_pool_with_its_cause() -> None:
    async with LoopPool(1, initializer=_tasks.init_fail) as pool:
        with pytest.raises(PoolError, match="initializer refused") as info:
            await pool.submit(_tasks.inc, 1)
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(PoolError):
            await pool.submit(_tasks.inc, 1)


async def test_max_tasks_per_worker_recycles_workers() -> None:
    async with LoopPool(1, max_tasks_per_worker=2) as pool:
        pids = [await pool.submit(_tasks.pid) for _ in range(6)]
    counts = Counter(pids)
    assert len(counts) == 3
    assert max(counts.values()) <= 2


async def test_leaving_the_block_drains_outstanding_work() -> None:
    async with LoopPool(2) as pool:
        tasks = [asyncio.create_task(pool.submit(_tasks.sleep_then, 0.05, i)) for i in range(8)]
        await asyncio.sleep(0)  # let every submit enqueue its task
        pids = pool.worker_pids()
    assert [t.result() for t in tasks] == list(range(8))
    assert await asyncio.to_thread(wait_gone, pids) == []
    with pytest.raises(PoolClosedError):
        await pool.submit(_tasks.inc, 1)


async def test_cancelling_the_caller_stops_workers_within_a_bound(beacon: Beacon) -> None:
    pids: list[int] = []

    async def caller() -> None:
        async with LoopPool(2) as pool:
            pids.extend(pool.worker_pids())
            await pool.submit(_tasks.announce_then_sleep, beacon.port, 60)

    task = asyncio.create_task(caller())
    await beacon.wait()
    task.cancel()
    async with asyncio.timeout(10):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await asyncio.to_thread(wait_gone, pids, 10) == []


async def test_terminate_fails_outstanding_tasks(beacon: Beacon) -> None:
    async with LoopPool(1) as pool:
        task = asyncio.create_task(pool.submit(_tasks.announce_then_sleep, beacon.port, 60))
        await beacon.wait()
        pids = pool.worker_pids()
        pool.terminate()
        with pytest.raises(PoolClosedError):
            await task
    assert await asyncio.to_thread(wait_gone, pids, 10) == []


async def test_pool_refuses_work_before_it_is_entered() -> None:
    with pytest.raises(PoolClosedError):
        await LoopPool(1).submit(_tasks.inc, 1)


def test_bad_arguments_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="workers"):
        LoopPool(0)
    with pytest.raises(ValueError, match="concurrency"):
        LoopPool(1, concurrency=0)


def test_workers_default_to_usable_cpus() -> None:
    assert LoopPool().workers == len(os.sched_getaffinity(0))


async def test_no_worker_is_left_after_the_pool_closes() -> None:
    me = psutil.Process()
    async with LoopPool(2) as pool:
        await pool.submit(_tasks.inc, 1)
        pids = pool.worker_pids()
    assert await asyncio.to_thread(wait_gone, pids, 10) == []
    assert not set(pids) & {p.pid for p in me.children(recursive=True)}


async def test_spawn_start_method_works_too() -> None:
    async with LoopPool(1, start_method="spawn") as pool:
        assert await pool.submit(_tasks.async_add, 40, 2) == 42
        assert [r async for r in pool.map(_tasks.inc, range(5))] == [1, 2, 3, 4, 5]


async def test_a_crash_while_draining_is_retried_on_a_replacement(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    async with LoopPool(1, retries=1) as pool:
        task = asyncio.create_task(pool.submit(_tasks.crash_once, str(marker)))
        await asyncio.sleep(0)  # let the submit enqueue, then leave the block
    assert task.result() != int(marker.read_text())


async def test_a_call_deaf_to_its_timeout_costs_its_worker_not_the_pool() -> None:
    async with LoopPool(1, task_timeout=0.2) as pool:
        before = pool.worker_pids()
        async with asyncio.timeout(30):
            with pytest.raises(TaskTimeoutError, match="was killed"):
                await pool.submit(_tasks.deaf_sleep, 60)
        assert await pool.submit(_tasks.inc, 1) == 2
        assert pool.worker_pids() != before


async def test_large_arguments_and_results_cross_in_linear_time(pool: LoopPool) -> None:
    size = 100 << 20
    async with asyncio.timeout(10):  # ~0.8 s; copying the unsent rest per send took ~22 s
        data = await pool.submit(_tasks.blob, size)
        assert len(data) == size
        assert await pool.submit(_tasks.length, data) == size


async def test_an_exception_that_cannot_be_rebuilt_arrives_as_pickling_error(
    pool: LoopPool,
) -> None:
    with pytest.raises(PicklingError, match="NeedsContextError: failed in the worker") as info:
        await pool.submit(_tasks.raise_unrebuildable)
    assert "raise_unrebuildable" in "\n".join(info.value.__notes__)


async def test_an_unpicklable_initializer_fails_at_start() -> None:
    pool = LoopPool(1, initializer=lambda: None)
    with pytest.raises(PicklingError, match="initializer"):
        await pool.__aenter__()
    with pytest.raises(PoolClosedError):
        await pool.submit(_tasks.inc, 1)
