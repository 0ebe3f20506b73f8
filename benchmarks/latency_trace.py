"""Where a request's round trip goes: ``python benchmarks/latency_trace.py ARGS``.

Runs ``python -m asyncconc ARGS`` (for example ``download urls.txt -o DIR
-j 16 -q``) in this process with two hooks on the own receive path
(:mod:`asyncconc.downloader._http1`), and prints, per download slot (the
worker task that sends one request after another):

* **client gap**: from the moment an answer's last byte was taken in to the
  moment that slot's next request was handed to the socket: what the
  client spends between two requests (the file's commit, the next name,
  and waiting for the loop while it serves the other slots);
* **answer time**: from the request to the answer's last byte, less
  ``--delay`` (the server's fixed wait in the latency set): the server's
  own work, the transfer, and the client's loop being busy when it arrived.

For the latency set of ``benchmarks/download.py`` (400 x 64 KiB, 100 ms
server delay, -j 16) the wall time is about 25 x (delay + client gap +
answer time) plus start-up. Plain ``http://`` URLs only (aiohttp's path is
not hooked). A measuring stick that reaches into private code, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import statistics
import sys
import time
from typing import Any

from asyncconc.downloader import _http1


def _summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    ms = sorted(v * 1e3 for v in values)
    return (
        f"n={len(ms)} median {statistics.median(ms):.2f} ms, mean {statistics.mean(ms):.2f}, "
        f"p90 {ms[int(len(ms) * 0.9)]:.2f}, max {ms[-1]:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="latency_trace.py")
    parser.add_argument("--delay", type=float, default=0.1, help="the server's fixed delay (s)")
    ours, rest = parser.parse_known_args()

    events: dict[int, list[tuple[str, float]]] = collections.defaultdict(list)
    slot_of: dict[int, int] = {}
    original_get = _http1.Connections.get
    original_finish = _http1.Answer._finish
    original_init = _http1.Answer.__init__

    async def get(self: _http1.Connections, *args: Any, **kwargs: Any) -> _http1.Answer:
        events[id(asyncio.current_task())].append(("send", time.perf_counter()))
        return await original_get(self, *args, **kwargs)

    def init(self: _http1.Answer, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        slot_of[id(self)] = id(asyncio.current_task())

    def finish(self: _http1.Answer) -> None:
        slot = slot_of.pop(id(self), None)
        if slot is not None:
            events[slot].append(("done", time.perf_counter()))
        original_finish(self)

    _http1.Connections.get = get  # type: ignore[method-assign]
    _http1.Answer.__init__ = init  # type: ignore[method-assign]
    _http1.Answer._finish = finish  # type: ignore[method-assign]

    from asyncconc.cli import main as cli_main

    code = cli_main(rest)
    gaps: list[float] = []
    answers: list[float] = []
    for sequence in events.values():
        for (kind, at), (next_kind, next_at) in itertools.pairwise(sequence):
            if (kind, next_kind) == ("done", "send"):
                gaps.append(next_at - at)
            elif (kind, next_kind) == ("send", "done"):
                answers.append(next_at - at - ours.delay)
    print(f"client gap (answer in -> next request out): {_summary(gaps)}", file=sys.stderr)
    print(f"answer time less the delay:                 {_summary(answers)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
