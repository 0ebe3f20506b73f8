"""Distributed processes: the lesson's last idea, 1 + ... + N across machines.

The lesson's way shares a ``Queue`` over the network with
``multiprocessing.managers``: a manager serves a task queue and a result
queue on a TCP port, and worker processes (on any machine that can reach
it) connect, take ranges and put back partial sums. Here it all runs on
127.0.0.1. The asyncconc way is the same sum through :class:`DaskPool`, on a
Dask LocalCluster it starts and owns; pointed at ``tcp://HOST:8786`` it runs
on real machines unchanged. Needs ``pip install 'asyncconc[dask]'`` for the
Dask row.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import secrets
import sys
import time
from collections.abc import Sequence
from multiprocessing.managers import BaseManager
from typing import Any

from asyncconc._runner import run
from asyncconc.lessons._table import Timing, format_rows, with_speedups
from asyncconc.pool._kernel import partial_sum, split_range

__all__ = ["dask_available", "dask_sum", "main", "manager_sum", "measure"]


class _QueueManager(BaseManager):
    pass


_tasks: queue.Queue[tuple[int, int] | None] = queue.Queue()
_results: queue.Queue[int] = queue.Queue()


def _task_queue() -> queue.Queue[tuple[int, int] | None]:
    return _tasks


def _result_queue() -> queue.Queue[int]:
    return _results


_QueueManager.register("tasks", callable=_task_queue)
_QueueManager.register("results", callable=_result_queue)


def _manager_worker(address: tuple[str, int], authkey: bytes) -> None:
    # What runs on each "other machine": connect, take ranges until None.
    manager = _QueueManager(address=address, authkey=authkey)
    manager.connect()
    tasks: Any = manager.tasks()  # type: ignore[attr-defined]
    results: Any = manager.results()  # type: ignore[attr-defined]
    while (task := tasks.get()) is not None:
        results.put(partial_sum(*task))


def manager_sum(n: int, parts: int = 8, workers: int = 2) -> int:
    """The lesson's way: queues shared by a manager on 127.0.0.1, ``workers`` processes."""
    authkey = secrets.token_bytes(16)
    ctx = multiprocessing.get_context("spawn")
    with _QueueManager(address=("127.0.0.1", 0), authkey=authkey, ctx=ctx) as manager:
        tasks: Any = manager.tasks()  # type: ignore[attr-defined]
        results: Any = manager.results()  # type: ignore[attr-defined]
        ranges = split_range(1, n + 1, parts)
        for task in ranges:
            tasks.put(task)
        for _ in range(workers):
            tasks.put(None)
        processes = [
            ctx.Process(target=_manager_worker, args=(manager.address, authkey))
            for _ in range(workers)
        ]
        for process in processes:
            process.start()
        total = sum(results.get(timeout=600) for _ in ranges)
        for process in processes:
            process.join()
        return int(total)


async def dask_sum(n: int, parts: int = 8, workers: int = 2) -> int:
    """The asyncconc way: the same ranges through DaskPool on its own LocalCluster."""
    from asyncconc.pool._dask import DaskPool

    async with DaskPool(workers=workers) as pool:
        return sum([part async for part in pool.starmap(partial_sum, split_range(1, n + 1, parts))])


def dask_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def measure(n: int, parts: int = 8, workers: int = 2) -> list[Timing]:
    """One process, the managers-queue version and DaskPool (if installed), timed."""
    expected = n * (n + 1) // 2
    rows: list[Timing] = []
    start = time.perf_counter()
    assert partial_sum(1, n + 1) == expected
    rows.append(Timing("one process", time.perf_counter() - start))
    start = time.perf_counter()
    assert manager_sum(n, parts, workers) == expected
    rows.append(
        Timing(
            f"multiprocessing.managers queues on 127.0.0.1, {workers} workers",
            time.perf_counter() - start,
        )
    )
    if dask_available():
        start = time.perf_counter()
        assert run(dask_sum(n, parts, workers)) == expected
        rows.append(
            Timing(
                f"DaskPool on a LocalCluster of {workers}, start included",
                time.perf_counter() - start,
            )
        )
    return with_speedups(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000_000, help="add 1..N (default: 1e8)")
    parser.add_argument("--parts", type=int, default=8, help="ranges (default: 8)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.parts < 1 or args.workers < 1:
        parser.error("--n, --parts and --workers must be at least 1")
    rows = measure(args.n, args.parts, args.workers)
    print(f"1 + 2 + ... + {args.n:,} = {args.n * (args.n + 1) // 2:,}")
    print("\n".join(format_rows(rows)))
    if not dask_available():
        print("(DaskPool row skipped: pip install 'asyncconc[dask]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
