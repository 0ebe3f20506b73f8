"""The segments of one ``--split`` file spread over the ``--workers`` processes.

In one process the segments of a file share one event loop, so a single big
file uses one core however many connections it has. With ``--workers W``
(W > 1) and ``--split N`` the worker that owns the URL (the *owner*) keeps
everything about the file: the first answer, the plan, the ``.part`` and its
``NAME.part.meta`` sidecar, the checks at the end and the rename. Of its
segments, those whose index is a multiple of W stay with it; each other one
is sent, through the parent, to another worker (a *helper*), round-robin,
which asks for it with its own ``Range`` + ``If-Range`` request and writes
it with ``os.pwritev`` into the same ``NAME.part``:

    owner --("seg", job, spec)--> parent --("seg", owner, job, spec)--> helper
    owner <--("seg-done", job, n)-- parent <--("seg-done", owner, job, n)-- helper
    owner <--("seg-end", job, n, outcome)-- parent <--(same)-- helper

How today's guarantees hold:

* **Never corrupt.** The helper checks its ``206`` exactly as the owner
  does (start, total length, validator; a ``200`` to the Range is a
  restart on one connection) and writes only into the ``.part`` the owner
  has open: it compares the device and inode the owner sent, and the
  length, and refuses anything else (a ``.part`` replaced by a restart).
  Only the owner renames, after every segment is complete.
* **The sidecar never claims more than the ``.part`` holds.** The helper
  reports ``n`` (bytes from the segment's start on disk) only after its
  ``pwritev`` returned; the owner counts those bytes and records them in the
  sidecar, which it alone writes. Bytes written but not yet reported when
  something dies are fetched again, never claimed.
* **A helper that fails or dies.** A transient failure is reported with
  what was written (``seg-end``); a helper that dies is noticed by the
  parent when its socket closes, which ends its jobs for their owners. The
  owner then fills the rest of the segment itself, from what was reported.
  An owner that dies or stops has its jobs cancelled by the parent.
* **No orphan, no hang.** Helpers are the run's own workers. A worker
  whose shard is done stays (serving segments) until the parent sends
  ``("stop",)``, which it does once every shard has all its results or has
  lost its worker. With ``--split`` every one of the W workers is started,
  also when the list has fewer lines than workers. A job asked for before
  any other worker said hello waits for the first one that does; when no
  other worker can come any more (all gone, or never started), it is handed
  back and the owner fills it.

A file that cannot be split (no byte ranges, too small) never gets here; a
one-process ``--split`` never sets :data:`~._segmented.SEGMENT_HELPERS`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncconc._errors import WriteError
from asyncconc.downloader._naming import PART_SUFFIX
from asyncconc.downloader._segmented import (
    _OPEN_FLAGS,
    Outcome,
    SegmentedFetch,
    SegmentRestart,
    SegmentRetry,
    _fill,
    _finish_writes,
    _Segment,
    _State,
)
from asyncconc.downloader._sessions import Sessions
from asyncconc.downloader._writing import ReceiveBudget

__all__ = ["Delegations", "SegmentHelper"]

Send = Callable[..., None]  # (message, *, urgent=False): queue a message to the parent


class Delegations:
    """The owner's side: segments handed to other processes, and their answers.

    Implements :class:`~._segmented.SegmentHelpers` for the downloads of one
    worker.
    """

    def __init__(self, send: Send, processes: int) -> None:
        self._send = send
        self._processes = processes
        self._jobs: dict[int, asyncio.Queue[tuple[Any, ...]]] = {}
        self._next = 0
        self._lost = False

    @property
    def processes(self) -> int:
        return self._processes

    async def fill(self, spec: dict[str, Any], on_done: Callable[[int], None]) -> Outcome | None:
        if self._lost:
            return ("retry", "lost the parent process")
        self._next += 1
        job = self._next
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._jobs[job] = queue
        self._send(("seg", job, spec), urgent=True)
        ended = False
        try:
            while True:
                message = await queue.get()
                if message[1] is not None:
                    on_done(message[1])
                if message[0] == "seg-end":
                    ended = True
                    outcome: Outcome | None = message[2]
                    return outcome
        finally:
            del self._jobs[job]
            if not ended:  # cancelled: the helper stops too
                self._send(("seg-cancel", job), urgent=True)

    def answer(self, message: tuple[Any, ...]) -> None:
        """A ``seg-done`` or ``seg-end`` the parent passed on."""
        queue = self._jobs.get(message[1])
        if queue is not None:
            queue.put_nowait((message[0], *message[2:]))

    def lost(self) -> None:
        """The parent is gone: every segment handed out comes back (to be done here)."""
        self._lost = True
        for queue in self._jobs.values():
            queue.put_nowait(("seg-end", None, ("retry", "lost the parent process")))


class SegmentHelper:
    """The helper's side: fills segments of files other workers own.

    One task per segment, on this worker's loop beside its own downloads,
    with a session of its own (made on first use). :meth:`aclose` cancels
    them and waits until each has written what it received.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._tasks: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._sessions: Sessions | None = None
        self._receivers = ReceiveBudget()

    def start(self, owner: int, job: int, spec: dict[str, Any]) -> None:
        if self._sessions is None:
            # Its own connections (and an aiohttp session only if needed).
            self._sessions = Sessions(None, timeout=spec["timeout"], limit=100, per_host=None)
        task = asyncio.get_running_loop().create_task(self._run(owner, job, spec))
        self._tasks[owner, job] = task
        task.add_done_callback(lambda _: self._tasks.pop((owner, job), None))

    def cancel(self, owner: int, job: int) -> None:
        task = self._tasks.get((owner, job))
        if task is not None:
            task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._sessions is not None:
            await self._sessions.aclose()

    async def _run(self, owner: int, job: int, spec: dict[str, Any]) -> None:
        start, end, done = spec["segment"]
        segment = _Segment(start, end, done, saved=done)
        send = self._send
        assert self._sessions is not None

        def report(s: _Segment) -> None:
            send(("seg-done", owner, job, s.done))

        state = _State(
            SegmentedFetch(
                sessions=self._sessions,
                url=spec["origin"],
                rel="",
                target=Path(spec["part"].removesuffix(PART_SUFFIX)),
                headers=spec["headers"],
                emit=lambda _: None,  # the owner tells the parent
                checksum=False,
                expected_sha256=None,
                receivers=self._receivers,
            ),
            spec["url"],
            spec["total"],
            spec["etag"],
            spec["last_modified"],
            [segment],
            report=report,
        )
        outcome: Outcome | None = None
        try:
            try:
                # On the loop (one open and fstat of an existing file): from a
                # thread, a cancel in between would leak the descriptor.
                state.fd = _open_same(spec)
                await _fill(state, segment, None)
            except SegmentRestart as exc:
                outcome = ("restart" if exc.split_off else "changed", str(exc))
            except WriteError as exc:
                outcome = ("write", str(exc))
            except (SegmentRetry, OSError) as exc:
                outcome = ("retry", str(exc))
            except asyncio.CancelledError:
                outcome = ("retry", "the helper process stopped")
                raise
        finally:
            _finish_writes(state)  # synchronously: what was received is written
            state.close()
            send(("seg-end", owner, job, segment.done, outcome), urgent=True)


def _open_same(spec: dict[str, Any]) -> int:
    """Open the owner's ``.part`` for writing, only if it is still that very file."""
    fd = os.open(spec["part"], _OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != tuple(spec["inode"]) or info.st_size != spec["total"]:
            raise SegmentRetry("the .part is not the one the owner has open")
    except BaseException:
        os.close(fd)
        raise
    return fd
