"""``python -m asyncconc sum N``: the lesson's 1 + 2 + ... + N on every core.

The range is cut into ``--chunks`` pieces, each added by
:func:`partial_sum` (an explicit Python loop) in a :class:`LoopPool` worker;
the total is checked against N(N+1)/2. ``--compare`` also times the same
kernel over the whole range in this process and prints the speedup.
``--scheduler tcp://HOST:PORT`` runs it on a Dask cluster instead, and
``--local-cluster W`` on a Dask LocalCluster of W workers (both need
``pip install 'asyncconc[dask]'``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

from asyncconc._errors import PoolError, UsageError
from asyncconc._runner import run
from asyncconc.cli import add_loop_option
from asyncconc.pool._kernel import partial_sum, split_range

__all__ = ["SumRun", "parallel_sum", "register"]


@dataclass(frozen=True, slots=True)
class SumRun:
    total: int
    seconds: float
    workers: int = 0


async def parallel_sum(
    n: int,
    *,
    workers: int | None = None,
    chunks: int = 8,
    loop: str = "auto",
    scheduler: str | None = None,
    local_cluster: int | None = None,
    connect_timeout: float = 10.0,
) -> SumRun:
    """1 + ... + ``n`` in ``chunks`` ranges on a fresh pool; the time includes its start.

    ``loop`` picks the workers' event loop (the caller's is whatever runs this).
    ``scheduler`` (a Dask scheduler address) or ``local_cluster`` (a number of
    workers for a pool-owned Dask LocalCluster) use :class:`DaskPool` instead
    of :class:`LoopPool`.
    """
    # Not needed to parse arguments, so imported here.
    from asyncconc.pool._api import LoopPool
    from asyncconc.pool._backend import PoolBackend
    from asyncconc.pool._dask import DaskPool

    start = time.perf_counter()
    pool: PoolBackend
    if scheduler is not None:
        pool = DaskPool(scheduler, loop=loop, connect_timeout=connect_timeout)
    elif local_cluster is not None:
        pool = DaskPool(workers=local_cluster, loop=loop)
    else:
        pool = LoopPool(workers, loop=loop)
    async with pool:
        total = 0
        async for part in pool.starmap(partial_sum, split_range(1, n + 1, chunks)):
            total += part
        used = pool.workers
    return SumRun(total, time.perf_counter() - start, used)


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
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        default=None,
        help="run on the Dask cluster of this scheduler (needs asyncconc[dask])",
    )
    where.add_argument(
        "--local-cluster",
        type=_whole_number,
        default=None,
        metavar="W",
        help="run on a Dask LocalCluster of W workers on 127.0.0.1 (needs asyncconc[dask])",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to reach the --scheduler and its first worker (default: 10)",
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
    local_cluster: int | None = args.local_cluster
    scheduler: str | None = args.scheduler
    if local_cluster is not None and local_cluster < 1:
        raise UsageError(f"sum: --local-cluster must be at least 1, not {local_cluster}")
    if (scheduler is not None or local_cluster is not None) and workers is not None:
        raise UsageError("sum: --workers is for the local pool; use --local-cluster W for Dask")
    if not args.connect_timeout > 0:
        raise UsageError(f"sum: --connect-timeout must be positive, not {args.connect_timeout}")
    job = parallel_sum(
        n,
        workers=workers,
        chunks=chunks,
        loop=args.loop,
        scheduler=scheduler,
        local_cluster=local_cluster,
        connect_timeout=args.connect_timeout,
    )
    try:
        result = run(job, loop=args.loop)
    except PoolError as exc:
        print(f"error: sum: {exc}", file=sys.stderr)
        return 1
    expected = n * (n + 1) // 2
    if result.total != expected:  # pragma: no cover - would be a bug
        print(f"sum 1..{n} = {result.total}, but N(N+1)/2 = {expected}: MISMATCH")
        return 1
    where = f" on the Dask cluster at {scheduler}" if scheduler else ""
    if local_cluster is not None:
        where = " on a Dask LocalCluster"
    print(f"sum 1..{n} = {result.total} (checked against N(N+1)/2)")
    print(
        f"{result.workers} workers{where}, {chunks} chunks: "
        f"{result.seconds:.3f} s wall, pool start included"
    )
    if args.compare:
        start = time.perf_counter()
        single = partial_sum(1, n + 1)
        seconds = time.perf_counter() - start
        assert single == expected
        speedup = seconds / result.seconds if result.seconds > 0 else float("inf")
        print(f"one process: {seconds:.3f} s; speedup {speedup:.2f}x")
    return 0
