"""Ping/pong: strict alternation through queues and across processes."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Callable

import psutil  # type: ignore[import-untyped,unused-ignore]  # types-psutil is optional
import pytest

import asyncconc
from asyncconc import (
    WorkerCrashedError,
    ping_pong,
    ping_pong_processes,
    ping_pong_processes_broken,
)


class WatchedStream(io.StringIO):
    """A text stream that sets ``reached`` once ``lines`` lines were written."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines
        self.reached = asyncio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.getvalue().count("\n") >= self.lines:
            self.reached.set()
        return written


def alternating(n: int) -> list[str]:
    return ["Ping" if i % 2 == 0 else "Pong" for i in range(n)]


async def test_ping_pong_prints_ten_words_alternately_by_default() -> None:
    out = io.StringIO()
    words = await ping_pong(out=out)
    assert words == alternating(10)
    assert out.getvalue() == "Ping\nPong\n" * 5


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
async def test_ping_pong_prints_exactly_n_and_leaves_no_task(n: int) -> None:
    before = asyncio.all_tasks()
    out = io.StringIO()
    assert await ping_pong(n, out=out, end="") == alternating(n)
    assert out.getvalue() == "".join(alternating(n))
    assert asyncio.all_tasks() == before


async def test_ping_pong_custom_words() -> None:
    out = io.StringIO()
    assert await ping_pong(3, out=out, words=("tick", "tock"), end=" ") == ["tick", "tock", "tick"]
    assert out.getvalue() == "tick tock tick "


async def test_cancelling_ping_pong_stops_both_players() -> None:
    before = asyncio.all_tasks()
    out = WatchedStream(lines=200)
    task = asyncio.create_task(ping_pong(10**9, out=out))
    await out.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == before
    lines = out.getvalue().splitlines()
    assert lines == alternating(len(lines))


@pytest.mark.parametrize("bad", [-1, 2.0, True])
async def test_bad_counts_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        await ping_pong(bad, out=io.StringIO())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative int"):
        await ping_pong_processes(bad, out=io.StringIO())  # type: ignore[arg-type]


def children() -> set[psutil.Process]:
    """Our live child processes, except multiprocessing's resource tracker."""
    found = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                found.add(p)
        except psutil.Error:
            pass  # it just exited
    return found


@pytest.fixture
def new_children() -> Callable[[], set[psutil.Process]]:
    """Children started since the test began (other tests may leave their own)."""
    before = children()
    return lambda: children() - before


async def test_two_processes_alternate_n_in_total(
    new_children: Callable[[], set[psutil.Process]],
) -> None:
    out = io.StringIO()
    assert await ping_pong_processes(11, out=out) == alternating(11)
    assert out.getvalue().splitlines() == alternating(11)
    assert new_children() == set()


async def test_broken_processes_each_print_n(
    new_children: Callable[[], set[psutil.Process]],
) -> None:
    out = io.StringIO()
    words = await ping_pong_processes_broken(6, out=out)
    # Each child has its own copy of the counter: 6 + 6 words, not 6.
    assert Counter(words) == {"Ping": 6, "Pong": 6}
    assert Counter(out.getvalue().split()) == {"Ping": 6, "Pong": 6}
    assert new_children() == set()


async def test_cancelling_the_cross_process_game_kills_the_workers(
    new_children: Callable[[], set[psutil.Process]],
) -> None:
    out = WatchedStream(lines=20)
    task = asyncio.create_task(ping_pong_processes(10**9, out=out))
    await out.reached.wait()
    workers = list(new_children())
    assert len(workers) >= 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == []
    lines = out.getvalue().splitlines()
    assert lines == alternating(len(lines))


async def test_a_worker_dying_is_reported(
    new_children: Callable[[], set[psutil.Process]],
) -> None:
    out = WatchedStream(lines=20)
    task = asyncio.create_task(ping_pong_processes(10**9, out=out))
    await out.reached.wait()
    victim = next(p for p in new_children() if "spawn_main" in " ".join(p.cmdline()))
    victim.kill()
    with pytest.raises(WorkerCrashedError, match="exited with code"):
        await asyncio.wait_for(task, 10)
    assert new_children() == set()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_both_variants_on_each_loop_in_debug_mode(loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")

    async def main() -> tuple[list[str], list[str]]:
        return (
            await ping_pong(5, out=io.StringIO()),
            await ping_pong_processes(5, out=io.StringIO()),
        )

    assert asyncconc.run(main(), loop=loop, debug=True) == (alternating(5), alternating(5))
