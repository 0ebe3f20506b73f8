"""LoopPool against multiprocessing.Pool, ProcessPoolExecutor and aiomultiprocess.Pool.

    python benchmarks/pool.py            # the full run (about a minute on 2 cores)
    python benchmarks/pool.py --quick    # smaller sizes, a smoke test
    python benchmarks/pool.py --sections A   # only the sum, e.g. on a quiet machine

(A) 1 + ... + N with the lesson's Python-loop kernel in 8 chunks: speedup over
    one process, on a warm pool and end to end (construction, work, shutdown).
(B) tiny tasks ``x + 1``: ``map`` with default settings, and one task per
    call (``submit``/``apply_async``/``apply``), all issued at once; best of 3.
(C) coroutine tasks ``await asyncio.sleep(0.05)`` on 2 workers x
    concurrency 16, against the ideal tasks * 0.05 / 32.
(D) construction to first result, each in a fresh interpreter (cold: for
    LoopPool this includes booting its fork server), plus a second LoopPool
    in the same process (each pool boots its own fork server).
(E) a 200 MB result and a 200 MB argument, LoopPool against
    ProcessPoolExecutor, each in a fresh interpreter on a warm pool: best
    wall time of 3 and the parent's peak RSS (the payload itself included).
(F) replacing a worker: SIGKILL it, then time until a task submitted at
    once has its result from the replacement (median of 7), for LoopPool's
    fork server and for ``start_method="spawn"``.
(G) DaskPool on a pool-owned LocalCluster of 2 workers (needs the dask
    extra): start to first result, the sum of (A) warm (best of 3) and end
    to end, tiny tasks/s through ``map``, and the naps of (C); the warm sum
    also through plain ``client.submit`` on the same cluster; start and warm
    sum again with ``start_method="spawn"`` and ``"fork"``, and as a floor
    with plain ``distributed`` calls (no asyncconc code) on a LocalCluster
    of 2 x 1 thread, with Dask's defaults and with the pool-owned cluster's
    settings. Each warm sum also gives its wall time beyond the kernel of
    its busiest worker: what driving the cluster costs per chunk. Last, each
    start method's start -> first result in fresh interpreters, the methods
    interleaved, median of 5 rounds (``distributed`` imported before the clock).

Every library runs with its own defaults (start method included) unless a
row says otherwise. Other work on the machine makes the figures noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncconc import LoopPool, partial_sum, run, split_range

try:
    import aiomultiprocess
except ImportError:  # pragma: no cover - reported in the output
    aiomultiprocess = None


def inc(x: int) -> int:
    return x + 1


async def nap(seconds: float) -> None:
    await asyncio.sleep(seconds)


# aiomultiprocess runs coroutine functions only: these wrap the same work.
async def ainc(x: int) -> int:
    return x + 1


async def apartial_sum(start: int, stop: int) -> int:
    return partial_sum(start, stop)


@dataclass(frozen=True, slots=True)
class Sizes:
    n: int
    chunks: int
    tiny: int
    naps: int
    payload: int
    nap_seconds: float = 0.05


FULL = Sizes(n=10**8, chunks=8, tiny=20_000, naps=2_000, payload=200 << 20)
QUICK = Sizes(n=10**7, chunks=8, tiny=5_000, naps=320, payload=50 << 20)


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    library: str
    what: str
    value: str
    ratio: str = ""


def _timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """The result and the best wall time of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


async def _atimed(make: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = await make()
        best = min(best, time.perf_counter() - start)
    return result, best


# Tiny-task figures are the best of this many runs: the machine is shared.
REPEAT = 3


# -- (A) the sum ---------------------------------------------------------------


def bench_sum(sizes: Sizes, workers: int) -> list[Row]:
    n = sizes.n
    ranges = split_range(1, n + 1, sizes.chunks)
    starts = [low for low, _ in ranges]
    stops = [high for _, high in ranges]
    expected = n * (n + 1) // 2
    total, single = _timed(lambda: partial_sum(1, n + 1))
    assert total == expected
    rows = [Row("A sum", "one process", f"1..{n:,}", f"{single:.2f} s")]

    def add(library: str, warm: float, end_to_end: float) -> None:
        rows.append(
            Row("A sum", library, "warm (compute only)", f"{warm:.2f} s", f"{single / warm:.2f}x")
        )
        rows.append(
            Row(
                "A sum",
                library,
                "end to end (start+work+stop)",
                f"{end_to_end:.2f} s",
                f"{single / end_to_end:.2f}x",
            )
        )

    async def looppool() -> tuple[float, float]:
        start = time.perf_counter()
        async with LoopPool(workers) as pool:
            got = sum([s async for s in pool.starmap(partial_sum, ranges)])
        end_to_end = time.perf_counter() - start
        assert got == expected
        async with LoopPool(workers) as pool:
            await asyncio.gather(*(pool.submit(inc, i) for i in range(4 * workers)))
            start = time.perf_counter()
            got = sum([s async for s in pool.starmap(partial_sum, ranges)])
            warm = time.perf_counter() - start
        assert got == expected
        return warm, end_to_end

    warm, end_to_end = run(looppool())
    add("LoopPool", warm, end_to_end)

    start = time.perf_counter()
    with multiprocessing.Pool(workers) as mp_pool:
        got = sum(mp_pool.starmap(partial_sum, ranges))
    end_to_end = time.perf_counter() - start
    assert got == expected
    with multiprocessing.Pool(workers) as mp_pool:
        mp_pool.map(inc, range(4 * workers), chunksize=1)
        got, warm = _timed(lambda: sum(mp_pool.starmap(partial_sum, ranges)))
    assert got == expected
    add("multiprocessing.Pool", warm, end_to_end)

    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers) as executor:
        got = sum(executor.map(partial_sum, starts, stops))
    end_to_end = time.perf_counter() - start
    assert got == expected
    with concurrent.futures.ProcessPoolExecutor(workers) as executor:
        list(executor.map(inc, range(4 * workers)))
        got, warm = _timed(lambda: sum(executor.map(partial_sum, starts, stops)))
    assert got == expected
    add("ProcessPoolExecutor", warm, end_to_end)

    if aiomultiprocess is not None:

        async def aio() -> tuple[float, float]:
            start = time.perf_counter()
            async with aiomultiprocess.Pool(workers) as pool:
                got = sum(await pool.starmap(apartial_sum, ranges))
            end_to_end = time.perf_counter() - start
            assert got == expected
            async with aiomultiprocess.Pool(workers) as pool:
                await pool.map(ainc, range(4 * workers))
                start = time.perf_counter()
                got = sum(await pool.starmap(apartial_sum, ranges))
                warm = time.perf_counter() - start
            assert got == expected
            return warm, end_to_end

        warm, end_to_end = asyncio.run(aio())
        add("aiomultiprocess.Pool", warm, end_to_end)
    else:
        rows.append(Row("A sum", "aiomultiprocess.Pool", "skipped", "not installed"))
    return rows


# -- (B) tiny tasks ----------------------------------------------------------------


def bench_tiny(sizes: Sizes, workers: int) -> list[Row]:
    count = sizes.tiny
    expected = count * (count + 1) // 2
    rows: list[Row] = []

    def add(library: str, what: str, seconds: float, got: int) -> None:
        assert got == expected, (library, what, got)
        rows.append(Row("B tiny", library, what, f"{count / seconds:,.0f} tasks/s"))

    async def looppool() -> None:
        async with LoopPool(workers) as pool:
            await asyncio.gather(*(pool.submit(inc, i) for i in range(4 * workers)))

            async def mapped() -> int:
                return sum([x async for x in pool.map(inc, range(count))])

            async def submitted() -> int:
                return sum(await asyncio.gather(*(pool.submit(inc, i) for i in range(count))))

            got, seconds = await _atimed(mapped, REPEAT)
            add("LoopPool", "map, defaults", seconds, got)
            got, seconds = await _atimed(submitted, REPEAT)
            add("LoopPool", "submit x N (gather)", seconds, got)

    run(looppool())

    with multiprocessing.Pool(workers) as mp_pool:
        mp_pool.map(inc, range(4 * workers), chunksize=1)
        got, seconds = _timed(lambda: sum(mp_pool.map(inc, range(count))), REPEAT)
        add("multiprocessing.Pool", "map, defaults", seconds, got)

        def applied() -> int:
            pending = [mp_pool.apply_async(inc, (i,)) for i in range(count)]
            return sum(p.get() for p in pending)

        got, seconds = _timed(applied, REPEAT)
        add("multiprocessing.Pool", "apply_async x N", seconds, got)

    with concurrent.futures.ProcessPoolExecutor(workers) as executor:
        list(executor.map(inc, range(4 * workers)))
        got, seconds = _timed(lambda: sum(executor.map(inc, range(count))), REPEAT)
        add("ProcessPoolExecutor", "map, defaults (chunksize=1)", seconds, got)
        got, seconds = _timed(lambda: sum(executor.map(inc, range(count), chunksize=256)), REPEAT)
        add("ProcessPoolExecutor", "map, chunksize=256", seconds, got)

        def submitted() -> int:
            futures = [executor.submit(inc, i) for i in range(count)]
            return sum(f.result() for f in futures)

        got, seconds = _timed(submitted, REPEAT)
        add("ProcessPoolExecutor", "submit x N", seconds, got)

    if aiomultiprocess is not None:

        async def aio() -> None:
            async with aiomultiprocess.Pool(workers) as pool:
                await pool.map(ainc, range(4 * workers))

                async def mapped() -> int:
                    return sum(await pool.map(ainc, range(count)))

                async def applied() -> int:
                    return sum(
                        await asyncio.gather(*(pool.apply(ainc, (i,)) for i in range(count)))
                    )

                got, seconds = await _atimed(mapped, REPEAT)
                add("aiomultiprocess.Pool", "map, defaults", seconds, got)
                got, seconds = await _atimed(applied, REPEAT)
                add("aiomultiprocess.Pool", "apply x N (gather)", seconds, got)

        asyncio.run(aio())
    else:
        rows.append(Row("B tiny", "aiomultiprocess.Pool", "skipped", "not installed"))
    return rows


# -- (C) coroutine tasks ----------------------------------------------------------


def bench_naps(sizes: Sizes) -> list[Row]:
    count, seconds = sizes.naps, sizes.nap_seconds
    ideal = count * seconds / 32
    rows: list[Row] = []
    what = f"{count} x sleep({seconds}), 2 x 16"

    async def looppool() -> float:
        async with LoopPool(2, concurrency=16) as pool:
            await asyncio.gather(*(pool.submit(inc, i) for i in range(8)))
            start = time.perf_counter()
            async for _ in pool.map(nap, [seconds] * count):
                pass
            return time.perf_counter() - start

    wall = run(looppool())
    rows.append(Row("C naps", "LoopPool", what, f"{wall:.2f} s", f"{wall / ideal:.3f} x ideal"))
    if aiomultiprocess is not None:

        async def aio() -> float:
            async with aiomultiprocess.Pool(2, childconcurrency=16) as pool:
                await pool.map(ainc, range(8))
                start = time.perf_counter()
                await pool.map(nap, [seconds] * count)
                return time.perf_counter() - start

        wall = asyncio.run(aio())
        rows.append(
            Row(
                "C naps",
                "aiomultiprocess.Pool",
                what,
                f"{wall:.2f} s",
                f"{wall / ideal:.3f} x ideal",
            )
        )
    else:
        rows.append(Row("C naps", "aiomultiprocess.Pool", "skipped", "not installed"))
    rows.append(
        Row(
            "C naps",
            "multiprocessing.Pool / PPE",
            "n/a: one task at a time per process",
            f"~{count * seconds / 2:.0f} s",
        )
    )
    rows.append(Row("C naps", "ideal", "tasks x 0.05 / 32", f"{ideal:.3f} s"))
    return rows


# -- (D) first result ---------------------------------------------------------------


def first_result(library: str) -> float:
    """Seconds from construction to the first result, in this (fresh) process."""
    start = time.perf_counter()
    if library == "LoopPool":

        async def main() -> None:
            async with LoopPool() as pool:
                await pool.submit(inc, 1)
                print(f"{time.perf_counter() - start:.4f}")

        run(main())
    elif library == "multiprocessing.Pool":
        with multiprocessing.Pool() as mp_pool:
            mp_pool.apply(inc, (1,))
            print(f"{time.perf_counter() - start:.4f}")
    elif library == "ProcessPoolExecutor":
        with concurrent.futures.ProcessPoolExecutor() as executor:
            executor.submit(inc, 1).result()
            print(f"{time.perf_counter() - start:.4f}")
    elif library == "aiomultiprocess.Pool":
        assert aiomultiprocess is not None

        async def aio() -> None:
            async with aiomultiprocess.Pool() as pool:
                await pool.apply(ainc, (1,))
                print(f"{time.perf_counter() - start:.4f}")

        asyncio.run(aio())
    return time.perf_counter() - start


def _fresh_seconds(*args: str) -> float:
    """The seconds a fresh interpreter running this script with ``args`` printed first."""
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, timeout=120
    )
    return float(done.stdout.split()[0])


def bench_first_result() -> list[Row]:
    rows: list[Row] = []
    libraries = ["LoopPool", "multiprocessing.Pool", "ProcessPoolExecutor"]
    if aiomultiprocess is not None:
        libraries.append("aiomultiprocess.Pool")
    for library in libraries:
        seconds = _fresh_seconds("--first-result", library)
        rows.append(Row("D first", library, "cold, fresh interpreter", f"{seconds:.3f} s"))

    async def warm() -> float:
        async with LoopPool() as pool:  # boots the fork server
            await pool.submit(inc, 1)
        start = time.perf_counter()
        async with LoopPool() as pool:
            await pool.submit(inc, 1)
            return time.perf_counter() - start

    seconds = run(warm())
    rows.append(Row("D first", "LoopPool", "second pool, same process", f"{seconds:.3f} s"))
    return rows


# -- (E) big payloads ---------------------------------------------------------------


def blob(size: int) -> bytes:
    return b"x" * size


def length(data: bytes) -> int:
    return len(data)


def payload(library: str, kind: str, size: int) -> None:
    """Print the best of 3 seconds and this process's peak RSS (MB), fresh process."""
    import resource

    data = blob(size) if kind == "argument" else b""
    best = float("inf")
    if library == "LoopPool":

        async def main() -> float:
            fastest = float("inf")
            async with LoopPool(1) as pool:
                await pool.submit(inc, 1)
                for _ in range(3):
                    start = time.perf_counter()
                    if kind == "argument":
                        assert await pool.submit(length, data) == size
                    else:
                        assert len(await pool.submit(blob, size)) == size
                    fastest = min(fastest, time.perf_counter() - start)
            return fastest

        best = run(main())
    else:
        with concurrent.futures.ProcessPoolExecutor(1) as executor:
            executor.submit(inc, 1).result()
            for _ in range(3):
                start = time.perf_counter()
                if kind == "argument":
                    assert executor.submit(length, data).result() == size
                else:
                    assert len(executor.submit(blob, size).result()) == size
                best = min(best, time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{best:.4f} {peak:.0f}")


def bench_payloads(sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    mb = sizes.payload >> 20
    for kind in ("result", "argument"):
        times: dict[str, float] = {}
        for library in ("ProcessPoolExecutor", "LoopPool"):
            done = subprocess.run(
                [sys.executable, __file__, "--payload", library, kind, str(sizes.payload)],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            seconds, peak = done.stdout.split()
            times[library] = float(seconds)
            ratio = ""
            if library == "LoopPool":
                ratio = f"{times['ProcessPoolExecutor'] / times[library]:.2f}x PPE speed"
            what = f"{mb} MB {kind} (parent peak {peak} MB)"
            rows.append(Row("E big", library, what, f"{float(seconds):.3f} s", ratio))
    return rows


# -- (F) replacing a worker -----------------------------------------------------------


def bench_replacement() -> list[Row]:
    import signal
    import statistics

    async def measure(method: Any) -> float:
        samples: list[float] = []
        async with LoopPool(1, start_method=method, retries=1) as pool:
            for _ in range(7):
                victim = await pool.submit(os.getpid)
                start = time.perf_counter()
                os.kill(victim, signal.SIGKILL)
                while await pool.submit(os.getpid) == victim:
                    pass
                samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    rows = []
    for method in ("forkserver", "spawn"):
        seconds = run(measure(method))
        what = f"kill -> next result ({method})"
        rows.append(Row("F replace", "LoopPool", what, f"{seconds * 1000:.1f} ms"))
    return rows


def render(rows: list[Row]) -> str:
    headers = ("section", "library", "what", "value", "ratio")
    table = [headers, *((r.section, r.library, r.what, r.value, r.ratio) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(cells) for cells in table[1:])
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument(
        "--sections",
        default="ABCDEFG",
        help="which sections to run, e.g. A or BC (default: ABCDEFG)",
    )
    parser.add_argument("--first-result", metavar="LIBRARY", help=argparse.SUPPRESS)
    parser.add_argument("--payload", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--dask-first", metavar="START_METHOD", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.first_result:
        first_result(args.first_result)
        return 0
    if args.dask_first:
        dask_first(args.dask_first)
        return 0
    if args.payload:
        library, kind, size = args.payload
        payload(library, kind, int(size))
        return 0
    sizes = QUICK if args.quick else FULL
    workers = len(os.sched_getaffinity(0))
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, {workers} usable CPUs, "
        f"default start method {multiprocessing.get_start_method()}, "
        f"aiomultiprocess {aiomultiprocess.__version__ if aiomultiprocess else 'missing'}",
        flush=True,
    )
    rows: list[Row] = []
    benches: dict[str, Callable[[], list[Row]]] = {
        "A": lambda: bench_sum(sizes, workers),
        "B": lambda: bench_tiny(sizes, workers),
        "C": lambda: bench_naps(sizes),
        "D": bench_first_result,
        "E": lambda: bench_payloads(sizes),
        "F": bench_replacement,
        "G": lambda: bench_dask(sizes),  # Dask section: defined at the end
    }
    for name, bench in benches.items():
        if name not in args.sections.upper():
            continue
        new = bench()
        for row in new:
            print(f"{row.section:8} {row.library:22} {row.what:34} {row.value:>18} {row.ratio}")
        sys.stdout.flush()
        rows.extend(new)
    print()
    print(render(rows))
    return 0


# -- (G) DaskPool on a LocalCluster -------------------------------------------

DASK_TINY = {True: 50_000, False: 200_000}
# Fresh-interpreter starts: rounds of every start method, one after the other.
DASK_START_ROUNDS = {True: 2, False: 5}
DASK_START_METHODS = ("default", "spawn", "fork")


def dask_first(method: str) -> None:
    """Print start -> first result of a DaskPool in this (fresh) interpreter."""
    import distributed  # noqa: F401 - before the clock, as in the other start rows

    from asyncconc import DaskPool

    async def main() -> None:
        start = time.perf_counter()
        start_method: Any = None if method == "default" else method
        async with DaskPool(workers=2, start_method=start_method) as pool:
            assert await pool.submit(inc, 1) == 2
            print(f"{time.perf_counter() - start:.4f}", flush=True)

    run(main())


def bench_dask_starts(rounds: int) -> list[Row]:
    """Each start method's start -> first result in fresh interpreters, interleaved."""
    seconds: dict[str, list[float]] = {m: [] for m in DASK_START_METHODS}
    for _ in range(rounds):
        for method in DASK_START_METHODS:
            seconds[method].append(_fresh_seconds("--dask-first", method))
    rows = []
    for method, values in seconds.items():
        library = "DaskPool" if method == "default" else f"DaskPool, start_method={method}"
        rows.append(
            Row("G dask", library, f"start -> first result, fresh, median of {rounds}",
                f"{statistics.median(values):.3f} s", f"{min(values):.3f}-{max(values):.3f} s")
        )  # fmt: skip
    return rows


def traced_sum(start: int, stop: int) -> tuple[int, float, float, int]:
    """``partial_sum`` with where and when it ran: (pid, start, end, sum)."""
    began = time.time()  # one clock across processes (wall time, not perf_counter)
    total = partial_sum(start, stop)
    return os.getpid(), began, time.time(), total


def beyond_kernel(started: float, ended: float, runs: list[tuple[int, float, float, int]]) -> float:
    """A sum's wall time not spent in the kernel of its busiest worker.

    Submitting, the first chunk's start, the gaps between one worker's
    chunks (result out, next chunk in, the CPU resource's gate, unpickling)
    and the last result's way back: the cost per chunk of whoever drives the
    cluster, apart from the kernel's speed (which the neighbours set).
    """
    busy: dict[int, float] = {}
    for pid, began, end, _ in runs:
        busy[pid] = busy.get(pid, 0.0) + (end - began)
    return (ended - started) - max(busy.values())


def bench_dask(sizes: Sizes) -> list[Row]:
    """DaskPool figures beside LoopPool's; 2 workers, as the targets assume."""
    try:
        import distributed  # noqa: F401 - only to say whether it is there
    except ImportError:
        return [Row("G dask", "DaskPool", "skipped", "pip install 'asyncconc[dask]'")]
    from asyncconc import DaskPool
    from asyncconc.pool._dask_connect import CPU_RESOURCE, QUIET_CONFIG

    n = sizes.n
    ranges = split_range(1, n + 1, sizes.chunks)
    expected = n * (n + 1) // 2
    total, single = _timed(lambda: partial_sum(1, n + 1), repeat=2)
    assert total == expected
    tiny = DASK_TINY[sizes is QUICK]
    count, seconds = sizes.naps, sizes.nap_seconds
    ideal = count * seconds / 32

    def sum_rows(library: str, warm: float, beyond: float) -> list[Row]:
        return [
            Row("G dask", library, f"sum warm, best of {REPEAT}", f"{warm:.2f} s",
                f"{single / warm:.2f}x"),
            Row("G dask", library, "sum warm, wall beyond the kernel", f"{beyond * 1e3:.0f} ms",
                f"{beyond * 1e3 / len(ranges):.1f} ms a chunk"),
        ]  # fmt: skip

    async def pool_sum(pool: DaskPool) -> tuple[float, float]:
        got, warm = await _atimed(lambda: _asum(pool.starmap(partial_sum, ranges)), REPEAT)
        assert got == expected
        started = time.time()
        runs = [r async for r in pool.starmap(traced_sum, ranges)]
        assert sum(r[3] for r in runs) == expected
        return warm, beyond_kernel(started, time.time(), runs)

    async def measure() -> list[Row]:
        rows: list[Row] = [Row("G dask", "one process", f"1..{n:,}, best of 2", f"{single:.2f} s")]
        start = time.perf_counter()
        async with DaskPool(workers=2, concurrency=16) as pool:
            assert await pool.submit(inc, 1) == 2
            first = time.perf_counter() - start
            rows.append(
                Row("G dask", "DaskPool", "cluster start -> first result", f"{first:.3f} s")
            )
            rows.extend(sum_rows("DaskPool", *await pool_sum(pool)))
            # The floor on the very same cluster: plain client.submit, no asyncconc code.
            client = pool.client
            options = {"pure": False, "resources": {CPU_RESOURCE: 1}}

            async def plain_sum() -> int:
                return sum(await client.gather([client.submit(partial_sum, a, b, **options)
                                                for a, b in ranges]))  # fmt: skip

            got, warm = await _atimed(plain_sum, REPEAT)
            assert got == expected
            started = time.time()
            runs = await client.gather([client.submit(traced_sum, a, b, **options)
                                        for a, b in ranges])  # fmt: skip
            rows.extend(sum_rows("plain client.submit, same cluster", warm,
                                 beyond_kernel(started, time.time(), runs)))  # fmt: skip
            got, wall = await _atimed(lambda: _asum(pool.map(inc, range(tiny))), repeat=1)
            assert got == tiny * (tiny + 1) // 2
            rows.append(
                Row("G dask", "DaskPool", f"map {tiny:,} tiny tasks", f"{tiny / wall:,.0f} /s")
            )
            start = time.perf_counter()
            async for _ in pool.map(nap, [seconds] * count):
                pass
            wall = time.perf_counter() - start
            rows.append(
                Row("G dask", "DaskPool", f"{count} x sleep({seconds}), 2 x 16", f"{wall:.2f} s",
                    f"{wall / ideal:.3f} x ideal")
            )  # fmt: skip
        start = time.perf_counter()
        async with DaskPool(workers=2) as pool:
            got = await _asum(pool.starmap(partial_sum, ranges))
        end_to_end = time.perf_counter() - start
        assert got == expected
        rows.insert(
            4,
            Row("G dask", "DaskPool", "sum end to end (start+work+stop)", f"{end_to_end:.2f} s",
                f"{single / end_to_end:.2f}x"),
        )  # fmt: skip
        # The other start methods: spawn (Dask's default) and fork.
        for method in ("spawn", "fork"):
            start = time.perf_counter()
            async with DaskPool(workers=2, start_method=method) as pool:
                assert await pool.submit(inc, 1) == 2
                first = time.perf_counter() - start
                warm, beyond = await pool_sum(pool)
            library = f"DaskPool, start_method={method}"
            rows.append(Row("G dask", library, "cluster start -> first result", f"{first:.3f} s"))
            rows.extend(sum_rows(library, warm, beyond))
        # The floor: the same work through plain distributed calls, no asyncconc
        # code, with Dask's defaults and with the pool-owned cluster's settings.
        for library, settings in (
            ("plain distributed", {}),
            ("plain distributed, QUIET_CONFIG", QUIET_CONFIG),
        ):
            first, warm, beyond = await _plain_dask(ranges, expected, settings)
            rows.append(Row("G dask", library, "cluster start -> first result", f"{first:.3f} s"))
            rows.extend(sum_rows(library, warm, beyond))
        return rows

    return run(measure()) + bench_dask_starts(DASK_START_ROUNDS[sizes is QUICK])


async def _asum(results: Any) -> int:
    return sum([x async for x in results])


async def _plain_dask(
    ranges: list[tuple[int, int]], expected: int, settings: dict[str, object]
) -> tuple[float, float, float]:
    """Start -> first result, the warm sum and its wall beyond the kernel, on 2 x 1 thread."""
    import dask

    from asyncconc.pool._dask_connect import require_distributed

    distributed = require_distributed()  # Any: distributed's types are partial
    start = time.perf_counter()
    with dask.config.set(settings):
        cluster = await distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            asynchronous=True,
        )
    try:
        async with distributed.Client(cluster, asynchronous=True) as client:
            assert await client.submit(inc, 1) == 2
            first = time.perf_counter() - start

            async def plain_sum() -> int:
                futures = [client.submit(partial_sum, a, b, pure=False) for a, b in ranges]
                return sum(await client.gather(futures))

            got, warm = await _atimed(plain_sum, REPEAT)
            assert got == expected
            started = time.time()
            futures = [client.submit(traced_sum, a, b, pure=False) for a, b in ranges]
            runs = await client.gather(futures)
            beyond = beyond_kernel(started, time.time(), runs)
    finally:
        await cluster.close()
    return first, warm, beyond


if __name__ == "__main__":
    sys.exit(main())
