"""Ping/pong: two players print "Ping" and "Pong" strictly in turn, N in total.

The lesson's attempt starts two :mod:`multiprocessing` processes sharing a
global ``counter``; each child has its own copy, so each prints N words
(:func:`ping_pong_processes_broken` reproduces it). What makes two players
alternate is a *ball* that only one of them holds at a time; the ball here
is the number of words still to print:

* :func:`ping_pong`: two tasks, two :class:`asyncio.Queue` s (one inbox
  each). Whoever holds the ball prints and passes ``ball - 1``; the one who
  receives 0 prints nothing and sends a stop message back (Python 3.11 has
  no ``Queue.shutdown``), so both tasks end and none is left behind.
* :func:`ping_pong_processes`: the same rule across two ``spawn``-ed worker
  processes joined by a :func:`multiprocessing.Pipe`. Each worker reports
  ``(ball, word)`` to the parent on its own pipe; the parent waits on those
  pipes with :meth:`asyncio.loop.add_reader` (the event loop is never
  blocked) and writes the words in ball order.

Every function writes one ``word + end`` per turn to ``out`` (default
:data:`sys.stdout`) and returns the words in the order written.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Final, TextIO, cast

from asyncconc._errors import WorkerCrashedError

__all__ = ["ping_pong", "ping_pong_processes", "ping_pong_processes_broken"]

_STOP: Final = -1
_WORDS: Final = ("Ping", "Pong")
_JOIN_TIMEOUT: Final = 5.0


def _check(n: int, words: Sequence[str]) -> tuple[str, str]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, not {n!r}")
    if len(words) != 2:
        raise ValueError(f"ping/pong needs exactly two words, not {len(words)}")
    return words[0], words[1]


def _write(out: TextIO, word: str, end: str) -> None:
    out.write(word + end)
    out.flush()


# --- coroutines ------------------------------------------------------------


async def _player(
    word: str,
    inbox: asyncio.Queue[int],
    outbox: asyncio.Queue[int],
    out: TextIO,
    end: str,
    transcript: list[str],
) -> None:
    while True:
        ball = await inbox.get()
        if ball == _STOP:
            return
        if ball == 0:
            await outbox.put(_STOP)  # tell the other player to finish too
            return
        _write(out, word, end)
        transcript.append(word)
        await outbox.put(ball - 1)


async def ping_pong(
    n: int = 10,
    *,
    out: TextIO | None = None,
    words: Sequence[str] = _WORDS,
    end: str = "\n",
) -> list[str]:
    """Two tasks print ``words[0]`` and ``words[1]`` in turn, ``n`` in total.

    Both tasks live in a :class:`asyncio.TaskGroup` and have ended when this
    returns. Cancelling it cancels both. Raises :class:`ValueError` for a
    negative ``n``.
    """
    first, second = _check(n, words)
    stream = out if out is not None else sys.stdout
    transcript: list[str] = []
    # maxsize=1: a player can never run ahead of the other.
    to_first: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    to_second: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_player(first, to_first, to_second, stream, end, transcript))
        tg.create_task(_player(second, to_second, to_first, stream, end, transcript))
        await to_first.put(n)
    return transcript


# --- processes -------------------------------------------------------------
# The worker functions run in spawned children: they must be importable
# module-level functions, and they only use blocking Connection calls.


def _process_player(
    word: str, serve: int | None, ball_conn: Connection, report: Connection
) -> None:
    """Worker: like :func:`_player`, over a pipe; reports ``(ball, word)``."""
    try:
        ball = serve if serve is not None else ball_conn.recv()
        while ball not in (_STOP, 0):
            report.send((ball, word))
            ball_conn.send(ball - 1)
            ball = ball_conn.recv()
        if ball == 0:
            ball_conn.send(_STOP)
    except (EOFError, OSError):
        pass  # the other player died (EOF, reset): the parent reports it
    finally:
        report.close()
        ball_conn.close()


_counter = 0  # the lesson's "shared" counter: every process has its own


def _broken_player(word: str, n: int, report: Connection) -> None:
    """Worker: the lesson's loop on a module-global counter."""
    global _counter
    try:
        while _counter < n:
            report.send((_counter, word))
            _counter += 1
            time.sleep(0.01)
    finally:
        report.close()


async def _receive(conn: Connection) -> object:
    """The next object from ``conn``, waiting on the loop, not in a thread.

    Raises :class:`EOFError` when every writer has closed its end.
    """
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    # Readable: a whole message (they are tiny, written in one go) or EOF.
    return conn.recv()


async def _collect(conn: Connection, on_item: Callable[[int, str], None]) -> None:
    while True:
        try:
            item = await _receive(conn)
        except EOFError:
            return
        ball, word = cast(tuple[int, str], item)
        on_item(ball, word)


async def _run_workers(
    processes: Sequence[BaseProcess],
    child_ends: Sequence[Connection],
    reports: Sequence[Connection],
    on_item: Callable[[int, str], None],
) -> None:
    """Start ``processes``, pass their reports to ``on_item`` until EOF, join.

    Raises :class:`~asyncconc.WorkerCrashedError` when a worker exits with
    a non-zero code. On error or cancellation the workers are killed.
    """
    try:
        for process in processes:
            process.start()
        # The children hold their own copies now; closing ours lets EOF
        # reach the parent (and the other worker) when a child exits.
        for conn in child_ends:
            conn.close()
        async with asyncio.TaskGroup() as tg:
            for conn in reports:
                tg.create_task(_collect(conn, on_item))
        for process in processes:
            # Their report pipes are closed, so they are exiting: join off-loop.
            await asyncio.to_thread(process.join, _JOIN_TIMEOUT)
        for process in processes:
            if process.exitcode != 0:
                raise WorkerCrashedError(
                    f"ping/pong worker {process.name} exited with code {process.exitcode}"
                )
    finally:
        # Sync cleanup first: a cancelled or failed run leaves no children.
        for conn in (*child_ends, *reports):
            conn.close()
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                process.kill()
                process.join(_JOIN_TIMEOUT)  # quick after SIGKILL
            if process.pid is not None:
                process.close()


async def ping_pong_processes(
    n: int = 10,
    *,
    out: TextIO | None = None,
    words: Sequence[str] = _WORDS,
    end: str = "\n",
) -> list[str]:
    """Two spawned worker processes alternate, ``n`` words in total.

    The workers pass the ball to each other over one duplex pipe, exactly
    like :func:`ping_pong`'s tasks. The parent writes each reported word to
    ``out`` as soon as it is the next in order, without blocking its loop.

    Raises :class:`~asyncconc.WorkerCrashedError` when a worker dies or the
    words do not add up to ``n``. Cancelling kills both workers.
    """
    first, second = _check(n, words)
    stream = out if out is not None else sys.stdout
    ctx = multiprocessing.get_context("spawn")
    first_ball, second_ball = ctx.Pipe(duplex=True)
    first_report, first_report_w = ctx.Pipe(duplex=False)
    second_report, second_report_w = ctx.Pipe(duplex=False)
    processes = [
        ctx.Process(
            target=_process_player,
            args=(first, n, first_ball, first_report_w),
            name=f"pingpong-{first}",
        ),
        ctx.Process(
            target=_process_player,
            args=(second, None, second_ball, second_report_w),
            name=f"pingpong-{second}",
        ),
    ]
    transcript: list[str] = []
    pending: dict[int, str] = {}

    def in_order(ball: int, word: str) -> None:
        # Reports arrive on two pipes; the ball number restores the order.
        pending[ball] = word
        while (expected := n - len(transcript)) in pending:
            word = pending.pop(expected)
            _write(stream, word, end)
            transcript.append(word)

    await _run_workers(
        processes,
        [first_ball, second_ball, first_report_w, second_report_w],
        [first_report, second_report],
        in_order,
    )
    if len(transcript) != n or pending:
        raise WorkerCrashedError(f"ping/pong workers printed {len(transcript)} of {n} words")
    return transcript


async def ping_pong_processes_broken(
    n: int = 10,
    *,
    out: TextIO | None = None,
    words: Sequence[str] = _WORDS,
    end: str = "\n",
) -> list[str]:
    """The lesson's broken version: each process counts on its own copy.

    Each spawned worker loops ``while counter < n`` on a module-global
    ``counter`` with a 10 ms sleep, as in the lesson, so *each* prints ``n``
    words (``2 * n`` in total) in no particular order. Returns the words in
    the order the parent received them.
    """
    first, second = _check(n, words)
    stream = out if out is not None else sys.stdout
    ctx = multiprocessing.get_context("spawn")
    pipes = [ctx.Pipe(duplex=False) for _ in range(2)]
    processes = [
        ctx.Process(target=_broken_player, args=(word, n, w), name=f"broken-{word}")
        for word, (_, w) in zip((first, second), pipes, strict=True)
    ]
    transcript: list[str] = []

    def as_received(ball: int, word: str) -> None:
        del ball
        _write(stream, word, end)
        transcript.append(word)

    await _run_workers(processes, [w for _, w in pipes], [r for r, _ in pipes], as_received)
    return transcript
