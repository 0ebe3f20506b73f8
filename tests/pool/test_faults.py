"""What a task or a worker can do wrong, and the pool's bounds for each.

Every test here ran forever (or broke the pool) before the pool enforced
timeouts itself, gated work on READY and told outside kills apart from a
failing initializer; each now runs under a hard ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from asyncconc import BrokenPoolError, LoopPool, TaskTimeoutError, WorkerCrashedError
from tests.pool import _tasks
from tests.pool._support import Beacon, wait_gone

T = 0.5  # task_timeout in these tests
G = LoopPool.timeout_grace
# On a loaded machine a result may take a while to travel: the promise is
# T + G; the tests allow a lot more, and still fail on a hang.
SLACK = 8.0


@pytest.fixture
async def beacon() -> AsyncIterator[Beacon]:
    async with Beacon() as listening:
        yield listening


async def test_a_coroutine_blocking_its_loop_times_out_and_does_not_poison_the_pool() -> None:
    async with LoopPool(2, task_timeout=T) as pool:
        loop = asyncio.get_running_loop()
        start = loop.time()
        blocker = asyncio.create_task(pool.submit(_tasks.blocking_coroutine, 1e6))
        healthy = [pool.submit(_tasks.async_sleep, 0.01, i) for i in range(64)]
        async with asyncio.timeout(T + G + SLACK):
            assert await asyncio.gather(*healthy) == list(range(64))
            with pytest.raises(TaskTimeoutError, match="blocking_coroutine"):
                await blocker
        assert loop.time() - start < T + G + SLACK
        async with asyncio.timeout(SLACK):
            assert [r async for r in pool.map(_tasks.inc, range(100))] == list(range(1, 101))


async def test_a_coroutine_swallowing_cancellation_times_out_and_shutdown_is_prompt() -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(T + G + 2 * SLACK):
        async with LoopPool(1, task_timeout=T, shutdown_timeout=60) as pool:
            with pytest.raises(TaskTimeoutError, match="swallow_cancel"):
                await pool.submit(_tasks.swallow_cancel, 1e6)
            assert await pool.submit(_tasks.async_add, 1, 2) == 3
            leaving = loop.time()
        assert loop.time() - leaving < SLACK  # not the 60 s shutdown_timeout


async def _pids_of_both_workers(pool: LoopPool) -> list[int]:
    """Run tasks until both workers have answered (so both are READY)."""
    seen: set[int] = set()
    async with asyncio.timeout(SLACK * 2):
        while len(seen) < 2:
            seen.update(await asyncio.gather(*(pool.submit(_tasks.pid) for _ in range(4))))
    return sorted(seen)


async def test_a_stopped_worker_fails_one_task_and_the_rest_run_elsewhere() -> None:
    async with LoopPool(2, task_timeout=T) as pool:
        victim = (await _pids_of_both_workers(pool))[0]
        os.kill(victim, signal.SIGSTOP)
        try:
            async with asyncio.timeout(T + G + SLACK):
                outcomes = await asyncio.gather(
                    *(pool.submit(_tasks.inc, i) for i in range(200)), return_exceptions=True
                )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        timeouts = [o for o in outcomes if isinstance(o, TaskTimeoutError)]
        assert len(timeouts) == 1  # the one handed to the stopped worker first
        assert str(victim) in str(timeouts[0])
        assert [o for o in outcomes if not isinstance(o, BaseException)] == [
            i + 1 for i in range(200) if not isinstance(outcomes[i], BaseException)
        ]
        # The timeout fails the task first, then the kill is reported by the
        # fork server: wait for that report (bounded) before looking.
        async with asyncio.timeout(SLACK):
            while victim in pool.worker_pids():
                await asyncio.sleep(0.01)
        assert await pool.submit(_tasks.inc, 1) == 2  # and the pool goes on


async def test_a_map_meeting_a_stopped_worker_raises_within_t_plus_g() -> None:
    async with LoopPool(1, task_timeout=T) as pool:
        victim = await pool.submit(_tasks.pid)
        os.kill(victim, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(T + G + SLACK):
            with pytest.raises(TaskTimeoutError):
                async for _ in pool.map(_tasks.inc, range(2000)):
                    pass
        assert loop.time() - start < T + G + SLACK
        assert [r async for r in pool.map(_tasks.inc, range(2000))] == list(range(1, 2001))


async def test_a_plain_call_deaf_to_signals_in_a_long_chunk_costs_t_plus_g_not_the_chunk() -> None:
    # The last of 100 calls in one chunk ignores SIGALRM. The old backstop
    # was timeout x calls + 2 s = 52 s; the bound is now per call.
    args = [0.0] * 99 + [1e6]
    async with LoopPool(1, task_timeout=T) as pool:
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(T + G + SLACK):
            with pytest.raises(TaskTimeoutError, match="deaf_sleep"):
                async for _ in pool.map(_tasks.deaf_sleep, args, chunksize=100):
                    pass
        assert loop.time() - start < T + G + SLACK
        assert await pool.submit(_tasks.inc, 1) == 2


async def test_each_call_of_a_chunk_gets_the_timeout_not_the_whole_chunk() -> None:
    # 40 calls of 0.04 s in one chunk: 1.6 s in all, more than T + G, but
    # each call is far below T, so nothing times out and no worker dies.
    async with LoopPool(1, task_timeout=0.3) as pool:
        before = pool.worker_pids()
        args = [(0.04, i) for i in range(40)]
        async with asyncio.timeout(SLACK + 2):
            results = [r async for r in pool.starmap(_tasks.sleep_then, args, chunksize=40)]
        assert results == list(range(40))
        assert pool.worker_pids() == before


async def test_an_initializer_that_never_returns_breaks_the_pool_within_init_timeout() -> None:
    async with asyncio.timeout(1 + SLACK):
        async with LoopPool(2, initializer=_tasks.init_hang, init_timeout=1) as pool:
            with pytest.raises(BrokenPoolError, match=r"init_hang did not return within"):
                await pool.submit(_tasks.inc, 1)
            with pytest.raises(BrokenPoolError):
                await pool.submit(_tasks.inc, 1)


async def test_an_initializer_calling_os_exit_is_named_and_no_task_is_blamed() -> None:
    async with asyncio.timeout(SLACK * 2), LoopPool(1, initializer=_tasks.init_exit) as pool:
        with pytest.raises(BrokenPoolError, match=r"init_exit.*exited with code 3") as info:
            await pool.submit(_tasks.inc, 1)
        assert not isinstance(info.value, WorkerCrashedError)


async def test_outside_kills_of_fresh_workers_do_not_break_the_pool() -> None:
    async with LoopPool(2) as pool:
        killed: set[int] = set()
        deadline = time.monotonic() + 5
        while len(killed) < 8 and time.monotonic() < deadline:
            for pid in set(pool.worker_pids()) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            await asyncio.sleep(0.002)  # fault injection pace, not synchronisation
        assert len(killed) >= 8
        async with asyncio.timeout(SLACK * 2):
            assert await pool.submit(_tasks.inc, 41) == 42
            assert [r async for r in pool.map(_tasks.inc, range(50))] == list(range(1, 51))


async def test_plain_functions_may_run_their_own_event_loop() -> None:
    async with LoopPool(1) as pool:
        assert await pool.submit(_tasks.run_asyncio, 41) == 42


async def test_coroutines_do_not_queue_behind_a_plain_function(beacon: Beacon) -> None:
    async with LoopPool(2, concurrency=4) as pool:
        plain = asyncio.create_task(pool.submit(_tasks.announce_then_sleep, beacon.port, 60))
        await beacon.wait()
        async with asyncio.timeout(SLACK):
            done = await asyncio.gather(
                *(pool.submit(_tasks.async_sleep, 0.01, i) for i in range(20))
            )
        assert done == list(range(20))
        assert not plain.done()
        pool.terminate()
        with pytest.raises(Exception, match="terminated"):
            await plain


async def test_coroutines_run_beside_a_plain_function_on_a_single_worker(beacon: Beacon) -> None:
    async with LoopPool(1) as pool:
        plain = asyncio.create_task(pool.submit(_tasks.announce_then_sleep, beacon.port, 60))
        await beacon.wait()
        async with asyncio.timeout(SLACK):
            assert await pool.submit(_tasks.async_add, 20, 22) == 42
        pool.terminate()
        with pytest.raises(Exception, match="terminated"):
            await plain


async def test_callables_returning_awaitables_are_awaited() -> None:
    async with LoopPool(1) as pool:
        assert await pool.submit(_tasks.AsyncCallable(), 4) == 40
        assert await pool.submit(_tasks.returns_coroutine, 40) == 42
        assert [r async for r in pool.map(_tasks.returns_coroutine, range(5))] == [2, 3, 4, 5, 6]


async def test_a_pool_inside_a_worker_works() -> None:
    async with asyncio.timeout(SLACK * 3), LoopPool(1) as pool:
        assert await pool.submit(_tasks.nested_pool_square, 7) == 49


async def test_a_killed_fork_server_breaks_the_pool_and_takes_its_workers() -> None:
    async with LoopPool(2) as pool:
        assert await pool.submit(_tasks.inc, 1) == 2
        server, *workers = pool.process_pids()
        os.kill(server, signal.SIGKILL)

        async def submit_until_it_fails() -> None:
            while True:  # until the death is seen
                await pool.submit(_tasks.inc, 1)

        async with asyncio.timeout(SLACK):
            with pytest.raises(BrokenPoolError, match="fork server died"):
                await submit_until_it_fails()
        assert await asyncio.to_thread(wait_gone, workers, 2.0) == []
