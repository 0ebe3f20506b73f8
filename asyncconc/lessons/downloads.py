"""Downloads: one after another, in processes, in threads, and as coroutines.

The lesson simulates downloads with ``sleep(randint(5, 10))``. Here the same
N files come from the built-in loopback server, each answering after its own
random delay (0.5-1.0 s by default), and four strategies fetch them:

* sequential: ``urllib`` one file after the other: about the sum of delays;
* processes: one ``multiprocessing.Process`` per file (the ``spawn`` start
  method, so every process starts a fresh interpreter: that cost shows);
* threads: one ``threading.Thread`` per file;
* coroutines: :func:`asyncconc.download`, every file at once on one thread:
  about the longest single delay.

The server runs on its own event loop in a background thread, so the
blocking clients (``urllib`` in the main thread, threads, processes) can
reach it while the main thread waits.

Run: ``python scenarios/downloads.py [--files N] [--min-delay S] [--max-delay S]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import asyncconc
from asyncconc.lessons._table import Timing, format_rows
from asyncconc.testing import FileServer, serve_files_in_thread

__all__ = ["background_server", "main", "measure"]


STRATEGIES = ("sequential", "processes", "threads", "coroutines")


@contextmanager
def background_server(files: dict[str, int]) -> Iterator[FileServer]:
    """The loopback file server in a background thread, with generated files."""
    with serve_files_in_thread() as server:
        for name, size in files.items():
            server.add_generated(name, size)
        yield server


def fetch(url: str, path: Path) -> None:
    """The blocking client the lesson's threads and processes would use."""
    urllib.request.urlretrieve(url, path)


def sequential(urls: Sequence[str], dest: Path) -> None:
    for i, url in enumerate(urls):
        fetch(url, dest / f"file{i}.bin")


def processes(urls: Sequence[str], dest: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    # The target is urllib's own function so the children can import it
    # whichever way this script was loaded.
    workers = [
        ctx.Process(target=urllib.request.urlretrieve, args=(url, dest / f"file{i}.bin"))
        for i, url in enumerate(urls)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join()


def threads(urls: Sequence[str], dest: Path) -> None:
    workers = [
        threading.Thread(target=fetch, args=(url, dest / f"file{i}.bin"))
        for i, url in enumerate(urls)
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def coroutines(urls: Sequence[str], dest: Path) -> None:
    results = asyncconc.run(asyncconc.download(urls, dest, concurrency=len(urls) or 1))
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} downloads failed: {failed[0].error}")


RUNNERS: dict[str, Callable[[Sequence[str], Path], None]] = {
    "sequential": sequential,
    "processes": processes,
    "threads": threads,
    "coroutines": coroutines,
}


def measure(
    files: int = 5,
    *,
    min_delay: float = 0.5,
    max_delay: float = 1.0,
    size: int = 64 * 1024,
    seed: int | None = None,
    strategies: Sequence[str] = STRATEGIES,
) -> list[Timing]:
    """Time each strategy on the same ``files`` files and delays; the rows."""
    rng = random.Random(seed)
    delays = [round(rng.uniform(min_delay, max_delay), 3) for _ in range(files)]
    names = {f"file{i}.bin": size for i in range(files)}
    rows: list[Timing] = []
    with background_server(names) as server, tempfile.TemporaryDirectory() as tmp:
        urls = [server.url(name, delay=d) for name, d in zip(names, delays, strict=True)]
        for strategy in strategies:
            dest = Path(tmp, strategy)
            dest.mkdir()
            start = time.perf_counter()
            RUNNERS[strategy](urls, dest)
            seconds = time.perf_counter() - start
            got = sum(1 for p in dest.iterdir() if p.stat().st_size == size)
            rows.append(Timing(strategy, seconds, f"{got}/{files} files"))
    if delays:
        rows.append(Timing("(sum of delays)", sum(delays), "what sequential must wait"))
        rows.append(Timing("(longest delay)", max(delays), "the best any strategy can do"))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5, help="how many files (default 5)")
    parser.add_argument("--min-delay", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--max-delay", type=float, default=1.0, help="seconds (default 1.0)")
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes per file")
    parser.add_argument("--seed", type=int, default=None, help="seed for the delays")
    parser.add_argument(
        "--only", choices=STRATEGIES, action="append", help="run only these strategies"
    )
    args = parser.parse_args(argv)
    if args.files < 1 or args.size < 0 or not 0 <= args.min_delay <= args.max_delay:
        parser.error("need --files >= 1, --size >= 0 and 0 <= --min-delay <= --max-delay")
    print(
        f"Downloading {args.files} files of {args.size // 1024} KiB, each answered after "
        f"{args.min_delay}-{args.max_delay} s, four ways:"
    )
    rows = measure(
        args.files,
        min_delay=args.min_delay,
        max_delay=args.max_delay,
        size=args.size,
        seed=args.seed,
        strategies=args.only or STRATEGIES,
    )
    print("\n".join(format_rows(rows)))
    print(
        "Sequential waits for every delay in turn; threads, processes and coroutines wait "
        "for them together. Coroutines need no thread or process per file (processes also "
        "pay for starting an interpreter each)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
