"""Divide and conquer: 1 + 2 + ... + 100,000,000 on every core.

    python scenarios/divide_and_conquer.py [--n 100000000] [--parts 8]

Three ways, timed end to end: one process; the classic lesson (8
``multiprocessing.Process`` each putting its partial sum on a ``Queue``);
and :class:`asyncconc.LoopPool` with ``starmap`` over the same 8 ranges,
pool start-up included. All use the same Python-loop kernel,
:func:`asyncconc.partial_sum`, and are checked against N(N+1)/2.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Sequence

from asyncconc import LoopPool, partial_sum, run, split_range
from asyncconc.lessons._table import Timing, format_rows, with_speedups

__all__ = ["lesson_sum", "main", "measure", "pool_sum"]


def _lesson_worker(start: int, stop: int, results: multiprocessing.Queue[int]) -> None:
    results.put(partial_sum(start, stop))


def lesson_sum(n: int, parts: int = 8) -> int:
    """The lesson's way: one Process per range, partial sums through a Queue."""
    results: multiprocessing.Queue[int] = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=_lesson_worker, args=(low, high, results))
        for low, high in split_range(1, n + 1, parts)
    ]
    for process in processes:
        process.start()
    total = sum(results.get() for _ in processes)
    for process in processes:
        process.join()
    return total


async def pool_sum(n: int, parts: int = 8) -> int:
    """The pool's way: the same ranges through ``LoopPool.starmap``."""
    async with LoopPool() as pool:
        return sum([part async for part in pool.starmap(partial_sum, split_range(1, n + 1, parts))])


def measure(n: int, parts: int = 8) -> list[Timing]:
    expected = n * (n + 1) // 2
    rows: list[Timing] = []
    start = time.perf_counter()
    assert partial_sum(1, n + 1) == expected
    rows.append(Timing("one process", time.perf_counter() - start))
    start = time.perf_counter()
    assert lesson_sum(n, parts) == expected
    rows.append(Timing(f"{parts} x multiprocessing.Process + Queue", time.perf_counter() - start))
    start = time.perf_counter()
    assert run(pool_sum(n, parts)) == expected
    rows.append(Timing(f"LoopPool, {parts} ranges, start included", time.perf_counter() - start))
    return with_speedups(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000_000, help="add 1..N (default: 1e8)")
    parser.add_argument("--parts", type=int, default=8, help="ranges (default: 8)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.parts < 1:
        parser.error("--n and --parts must be at least 1")
    rows = measure(args.n, args.parts)
    print(f"1 + 2 + ... + {args.n:,} = {args.n * (args.n + 1) // 2:,}")
    print("\n".join(format_rows(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
