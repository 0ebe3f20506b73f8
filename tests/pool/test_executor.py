"""The concurrent.futures faces, against what the concurrent.futures docs say.

``LoopPoolExecutor`` (no event loop: the sync entry point) and
``LoopPool.executor()`` (a face on an open pool), with real workers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from asyncconc import (
    BrokenPoolError,
    LoopPool,
    LoopPoolExecutor,
    PoolClosedError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from tests.pool import _tasks


@pytest.fixture(scope="module")
def executor() -> Iterator[LoopPoolExecutor]:
    with LoopPoolExecutor(2) as running:
        yield running


def test_submit_returns_a_future_with_the_result(executor: LoopPoolExecutor) -> None:
    future = executor.submit(_tasks.add, 2, 3, scale=10)
    assert isinstance(future, cf.Future)
    assert future.result(timeout=30) == 50
    assert executor.submit(_tasks.async_add, 2, 3).result(timeout=30) == 5


def test_a_failing_call_raises_its_own_exception(executor: LoopPoolExecutor) -> None:
    future = executor.submit(_tasks.boom, 3)
    with pytest.raises(_tasks.TaskFailedError):
        future.result(timeout=30)
    assert isinstance(future.exception(), _tasks.TaskFailedError)


def test_map_zips_iterables_in_order_with_chunks(executor: LoopPoolExecutor) -> None:
    a, b = range(100), range(100, 200)
    assert list(executor.map(_tasks.add, a, b)) == [x + y for x, y in zip(a, b, strict=True)]
    assert list(executor.map(_tasks.add, a, b, chunksize=7)) == [
        x + y for x, y in zip(a, b, strict=True)
    ]
    assert list(executor.map(_tasks.square, range(5), timeout=30)) == [0, 1, 4, 9, 16]
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(_tasks.square, range(5), chunksize=0)


def test_map_raises_timeout_error_when_a_result_is_late(executor: LoopPoolExecutor) -> None:
    results = executor.map(_tasks.sleep_then, [0.0, 2.0], [1, 2], timeout=0.5)
    assert next(results) == 1
    with pytest.raises(TimeoutError):
        next(results)


def test_futures_work_with_wait_and_as_completed(executor: LoopPoolExecutor) -> None:
    futures = [executor.submit(_tasks.square, i) for i in range(20)]
    done, not_done = cf.wait(futures, timeout=30)
    assert not not_done
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=30)) == [
        i * i for i in range(20)
    ]
    assert done == set(futures)


def test_submit_works_from_many_threads(executor: LoopPoolExecutor) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def client(base: int) -> None:
        values = [executor.submit(_tasks.inc, base + i) for i in range(25)]
        with lock:
            results.extend(f.result(timeout=30) for f in values)

    threads = [threading.Thread(target=client, args=(100 * k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == sorted(100 * k + i + 1 for k in range(4) for i in range(25))


def test_cancel_succeeds_for_a_call_not_yet_handed_to_a_worker(tmp_path: Path) -> None:
    with LoopPoolExecutor(1) as executor:
        marker = tmp_path / "started"
        running = executor.submit(_tasks.touch_and_wait, str(marker), 2.0)
        queued = [executor.submit(_tasks.inc, i) for i in range(4)]
        last = queued[-1]
        assert last.cancel()
        assert last.cancelled()
        with pytest.raises(cf.CancelledError):
            last.result()
        assert not running.cancel() or running.cancelled()
        assert [f.result(timeout=30) for f in queued[:-1]] == [1, 2, 3]


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_shutdown_cancel_futures_cancels_pending_calls_and_refuses_new_ones(
    tmp_path: Path,
) -> None:
    executor = LoopPoolExecutor(1)
    marker = tmp_path / "started"
    first = executor.submit(_tasks.touch_and_wait, str(marker), 0.5)
    rest = [executor.submit(_tasks.sleep_then, 0.5, i) for i in range(6)]
    _wait_for(marker)
    executor.shutdown(wait=True, cancel_futures=True)
    assert first.result() is None
    assert rest[-1].cancelled()
    assert all(f.done() for f in rest)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(_tasks.inc, 1)
    with pytest.raises(PoolClosedError):
        executor.submit(_tasks.inc, 1)


def test_shutdown_without_wait_lets_calls_finish() -> None:
    executor = LoopPoolExecutor(1)
    futures = [executor.submit(_tasks.sleep_then, 0.05, i) for i in range(5)]
    executor.shutdown(wait=False)
    assert [f.result(timeout=30) for f in futures] == list(range(5))


def test_a_broken_pool_raises_broken_executor() -> None:
    with LoopPoolExecutor(1, initializer=_tasks.init_fail) as executor:
        future = executor.submit(_tasks.inc, 1)
        with pytest.raises(cf.BrokenExecutor, match="initializer refused"):
            future.result(timeout=30)
        with pytest.raises(BrokenProcessPool):
            executor.submit(_tasks.inc, 1)
        with pytest.raises(BrokenPoolError):
            executor.submit(_tasks.inc, 1)


def test_a_dead_worker_raises_broken_process_pool_but_the_pool_goes_on(tmp_path: Path) -> None:
    with LoopPoolExecutor(1) as executor:
        future = executor.submit(_tasks.kill_self, str(tmp_path / "pid"))
        with pytest.raises(BrokenProcessPool) as info:
            future.result(timeout=30)
        assert isinstance(info.value, WorkerCrashedError)
        assert executor.submit(_tasks.inc, 1).result(timeout=30) == 2


def test_task_timeout_raises_a_timeout_error() -> None:
    with LoopPoolExecutor(1, task_timeout=0.3) as executor:
        with pytest.raises(TimeoutError) as info:
            executor.submit(_tasks.sleep_then, 60, None).result(timeout=30)
        assert isinstance(info.value, TaskTimeoutError)


def test_run_in_executor_uses_the_pool_workers() -> None:
    async def main() -> tuple[int, int, set[int], set[int]]:
        async with LoopPool(2) as pool:
            loop = asyncio.get_running_loop()
            face = pool.executor()
            value = await loop.run_in_executor(face, _tasks.square, 7)
            pids = set(
                await asyncio.gather(*(loop.run_in_executor(face, _tasks.pid) for _ in range(8)))
            )
            with face:
                threaded = await asyncio.to_thread(lambda: face.submit(_tasks.inc, 1).result(30))
            return value, threaded, pids, set(pool.worker_pids())

    value, threaded, pids, workers = asyncio.run(main())
    assert (value, threaded) == (49, 2)
    assert pids <= workers


def test_run_in_executor_with_the_sync_executor(executor: LoopPoolExecutor) -> None:
    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(executor, _tasks.square, 9)

    assert asyncio.run(main()) == 81


def test_a_failing_pool_start_raises_from_the_constructor() -> None:
    with pytest.raises(ValueError, match="workers"):
        LoopPoolExecutor(0)
