"""``python -m asyncconc sum N``: the lesson's 1 + 2 + ... + N on every core.

The range is cut into ``--chunks`` pieces, each added by
:func:`partial_sum` (an explicit Python loop) in a :class:`LoopPool` worker;
the total is checked against N(N+1)/2. ``--compare`` also times the same
kernel over the whole range in this process and prints the speedup.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from asyncconc._errors import UsageError
from asyncconc._runner import run
from asyncconc.cli import add_loop_option
from asyncconc.pool._kernel import partial_sum, split_range

__all__ = ["SumRun", "parallel_sum", "register"]


@dataclass(frozen=True, slots=True)
class SumRun:
    total: int
    seconds: float


async def parallel_sum(
    n: int, *, workers: int | None = None, chunks: int = 8, loop: str = "auto"
) -> SumRun:
    """1 + ... + ``n`` in ``chunks`` ranges on a fresh pool; the time includes its start.

    ``loop`` picks the workers' event loop (the caller's is whatever runs this).
    """
    from asyncconc.pool._api import LoopPool  # not needed to parse arguments

    start = time.perf_counter()
    async with LoopPool(workers, loop=loop) as pool:
        total = 0
        async for part in pool.starmap(partial_sum, split_range(1, n + 1, chunks)):
            total += part
    return SumRun(total, time.perf_counter() - start)


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sum",
        help="add 1..N with a Python loop on every core (LoopPool)",
        # Plain text: the module's docstring is reST, for the API docs.
        description=(
            "Add 1 + 2 + ... + N on every core: the range is cut into C pieces (--chunks), "
            "each added with an explicit Python loop in a worker process of a LoopPool; "
            "the total is checked against N(N+1)/2. With --compare, the same loop also "
            "runs over the whole range in this process, and the speedup is printed."
        ),
    )
    parser.add_argument("n", metavar="N", type=_whole_number, help="add 1 + 2 + ... + N (N >= 0)")
    parser.add_argument(
        "--workers",
        type=_whole_number,
        default=None,
        metavar="W",
        help="worker processes (default: the usable CPUs)",
    )
    parser.add_argument(
        "--chunks", type=_whole_number, default=8, metavar="C", help="ranges (default: 8)"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also time one process doing it all, and print the speedup",
    )
    add_loop_option(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    n: int = args.n
    workers: int | None = args.workers
    chunks: int = args.chunks
    if n < 0:
        raise UsageError(f"sum: N must be 0 or more, not {n}")
    if workers is not None and workers < 1:
        raise UsageError(f"sum: --workers must be at least 1, not {workers}")
    if chunks < 1:
        raise UsageError(f"sum: --chunks must be at least 1, not {chunks}")
    result = run(parallel_sum(n, workers=workers, chunks=chunks, loop=args.loop), loop=args.loop)
    expected = n * (n + 1) // 2
    if result.total != expected:  # pragma: no cover - would be a bug
        print(f"sum 1..{n} = {result.total}, but N(N+1)/2 = {expected}: MISMATCH")
        return 1
    from asyncconc.pool._api import default_workers

    used = workers if workers is not None else default_workers()
    print(f"sum 1..{n} = {result.total} (checked against N(N+1)/2)")
    print(f"{used} workers, {chunks} chunks: {result.seconds:.3f} s wall, pool start included")
    if args.compare:
        start = time.perf_counter()
        single = partial_sum(1, n + 1)
        seconds = time.perf_counter() - start
        assert single == expected
        speedup = seconds / result.seconds if result.seconds > 0 else float("inf")
        print(f"one process: {seconds:.3f} s; speedup {speedup:.2f}x")
    return 0
