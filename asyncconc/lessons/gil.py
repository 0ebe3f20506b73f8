"""The GIL: CPU-bound loops in threads get no speedup; worker processes do.

    python scenarios/gil.py [--n 30000000] [--workers W]

The same Python-loop kernel (:func:`asyncconc.partial_sum`) adds 1..N three
ways: in one thread; split over W threads (one interpreter, one GIL: they
take turns, so no faster); split over W :class:`asyncconc.LoopPool` worker
processes (one GIL each: close to W times faster on W free cores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from asyncconc import LoopPool, partial_sum, run, split_range
from asyncconc.lessons._table import Timing, format_rows, with_speedups

__all__ = ["main", "measure"]


def measure(n: int, workers: int | None = None) -> list[Timing]:
    """Time 1..``n`` in one thread, in ``workers`` threads and in ``workers`` processes."""
    count = workers or len(os.sched_getaffinity(0))
    expected = n * (n + 1) // 2
    ranges = split_range(1, n + 1, count)
    rows: list[Timing] = []

    start = time.perf_counter()
    assert partial_sum(1, n + 1) == expected
    rows.append(Timing("one thread", time.perf_counter() - start))

    with ThreadPoolExecutor(count) as threads:
        start = time.perf_counter()
        total = sum(threads.map(partial_sum, *zip(*ranges, strict=True)))
        rows.append(Timing(f"{count} threads", time.perf_counter() - start))
    assert total == expected

    async def on_processes() -> tuple[float, float]:
        start = time.perf_counter()
        async with LoopPool(count) as pool:
            await asyncio.gather(*(pool.submit(partial_sum, 0, 1) for _ in range(2 * count)))
            started = time.perf_counter()
            total = sum([part async for part in pool.starmap(partial_sum, ranges)])
            done = time.perf_counter()
        assert total == expected
        return started - start, done - started

    startup, seconds = run(on_processes())
    rows.append(Timing(f"{count} processes (LoopPool, warm)", seconds))
    rows = with_speedups(rows)
    rows.append(Timing("  LoopPool start-up, not included above", startup))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000_000, help="add 1..N (default: 3e7)")
    parser.add_argument("--workers", type=int, default=None, help="threads and processes")
    args = parser.parse_args(argv)
    if args.n < 1 or (args.workers is not None and args.workers < 1):
        parser.error("--n and --workers must be at least 1")
    rows = measure(args.n, args.workers)
    print(f"1 + 2 + ... + {args.n:,} with a Python loop:")
    print("\n".join(format_rows(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
