"""Ping/pong: the lesson's broken processes, then two ways that alternate.

The lesson starts two processes that loop ``while counter < 10`` on a global
``counter``. Each process has its own copy of it, so each prints 10 words
(20 in all, in no order). Taking turns needs something passed between the
players; here it is a ball counting the words left:

* coroutines: two tasks, two ``asyncio.Queue`` s;
* processes: two worker processes, one pipe between them, driven from the
  event loop without blocking it.

Run: ``python scenarios/pingpong.py [-n N]``
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncconc
from asyncconc import ping_pong, ping_pong_processes, ping_pong_processes_broken
from asyncconc.lessons._table import Timing, format_rows

__all__ = ["main", "measure"]


Game = Callable[..., Coroutine[Any, Any, list[str]]]


def _alternates(words: Sequence[str]) -> bool:
    return all(a != b for a, b in itertools.pairwise(words))


def play(name: str, game: Game, n: int, *, echo: bool) -> Timing:
    """Run one variant, print its words on one line when ``echo``; its row."""
    out = sys.stdout if echo else io.StringIO()
    if echo:
        print(f"{name}:\n  ", end="", flush=True)
    start = time.perf_counter()
    words = asyncconc.run(game(n, out=out, end=" "))
    seconds = time.perf_counter() - start
    if echo:
        print()
    counts = Counter(words)
    tally = " + ".join(f"{w} x{c}" for w, c in sorted(counts.items())) or "nothing"
    if len(words) == n and _alternates(words):
        verdict = f"{len(words)} words, strictly alternating"
    else:
        alternating = "alternating" if _alternates(words) else "not alternating"
        verdict = f"WRONG: {tally} = {len(words)} words, not {n}; {alternating}"
    return Timing(name, seconds, verdict)


def measure(n: int = 10, *, echo: bool = False) -> list[Timing]:
    """Run the three variants with ``n`` words each; the rows."""
    return [
        play("processes, global counter (lesson)", ping_pong_processes_broken, n, echo=echo),
        play("coroutines + asyncio.Queue", ping_pong, n, echo=echo),
        play("processes + a pipe between them", ping_pong_processes, n, echo=echo),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="words in all (default 10)")
    args = parser.parse_args(argv)
    if args.n < 0:
        parser.error("-n must be 0 or more")
    rows = measure(args.n, echo=True)
    print()
    print("\n".join(format_rows(rows)))
    print(
        "Each spawned process gets its own 'counter', so the lesson's version prints n words "
        "per process. Passing a ball (the count of words left) makes the players take "
        "turns; the process version's time is mostly starting two interpreters."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
