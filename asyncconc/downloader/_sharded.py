"""Downloads sharded over the worker processes of a :class:`~asyncconc.LoopPool`.

On loopback (and on fast links) one event loop's CPU is the limit, so
``download --workers W`` runs W downloaders, one per worker process, each
with its own event loop and HTTP session, while the parent keeps everything
a user sees: the names, the progress, the results and the report.

How the guarantees of a single-process run are kept:

* **Names and collisions.** Every name is claimed from the one
  :class:`NameAllocator` in the parent. The first choice of every line (the
  list's name, the index's record, else the URL's name) is claimed in list
  order over all shards, as one process claims them, a little ahead of the
  downloads (see *names claimed ahead*), so collisions resolve exactly as
  they do in one process, also between lines in different workers. A
  server-given (Content-Disposition) name is claimed first-come, as it is in
  one process. Lines that want the same name also share a worker, so they
  start in list order.
* **.part, resume, retries, exit codes**: each worker runs the ordinary
  :class:`Downloader`; nothing about a single URL changes.
* **One file, many processes** (``--split``): the segments of a split file
  are spread over the workers; the parent passes segment messages between
  the owner of the file and its helpers, and tells every worker to stop once
  all shards are done (see :mod:`asyncconc.downloader._spread`).
* **Ctrl-C / cancellation**: the pool's workers are stopped with the run;
  what each had written stays in its ``.part`` file (with the validator
  sidecar, so a later run resumes). A worker that dies fails only the URLs
  it had not finished, with a clear error; the others are unaffected.

The parent does almost nothing per file (the Nginx model: the master only
hands out work and collects results), because it is one process serving
all the workers; measured, its per-message work was what made
``--workers 2`` slower than one process on small files:

* **Batched messages.** A worker queues its messages and writes them in one
  frame (a 4-byte length, then a pickled list) at most every
  :data:`FLUSH_DELAY` seconds, at once when it waits for an answer; the
  parent decodes a frame at once and answers all its claims in one frame.
* **Coalesced progress.** Bytes received are summed per URL and sent at
  most every :data:`PROGRESS_EVERY` seconds, and always just before that
  URL's ``started`` or ``finished``: a small file costs no progress message
  at all, a large one ten a second, and the totals are exact.
* **Names claimed ahead.** A worker asks for the names of its next lines in
  batches (:class:`_Names`); the parent then claims the first choices of
  all lines up to the last of those, of every shard, in list order
  (:class:`_Claims`), and each download takes its name with no round trip.
  A line's own name is thus claimed somewhat before it starts (one process:
  when it starts): about three times the worker's concurrency lines ahead
  in its shard, more when another worker runs ahead. That only matters to a
  server-given name that wants it, first-come either way.
  Should a download ask for another first name than the parent guessed (the
  index changed since the parent read it), it gives the guessed name back
  and claims its own, first-come.

Frames from a worker hold ``("hello", shard)``, ``("claims", shard, start,
count)``, ``("claim", id, wanted)``, ``("release", path)``,
``("started", url, path, total, resumed_from)``, ``("progress", url,
nbytes)``, ``("finished", index, result fields but the URL)`` and the segment
messages of :mod:`._spread`; the parent answers ``("names", start,
[(guessed, name), ...])``, ``("name", id, name)`` and ``("stop",)``, and
passes segment messages on.
Pickle is safe here: the socket lives in a private temporary folder of this
user, between processes of one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import pickle
import struct
import tempfile
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from asyncconc.downloader._index import INDEX_NAME
from asyncconc.downloader._models import (
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadRequest,
    DownloadResult,
    DownloadStarted,
    WireRequest,
)
from asyncconc.downloader._naming import NameAllocator, choose_name, name_max

if TYPE_CHECKING:
    from asyncconc.pool import LoopPool

__all__ = ["run_sharded", "shard_requests"]

_Item = tuple[int, DownloadRequest]
_Message = tuple[Any, ...]
# Seconds the workers get to save their .part files when the run is cancelled.
STOP_GRACE = 3.0
# A worker writes what it has queued at most this late (an answer it waits
# for goes at once). 2 ms: ~3 files of 16 KiB per frame at 1,500 files/s.
FLUSH_DELAY = 0.002
# Bytes received for one URL are reported at most this often (a live display
# refreshes ~10 times a second); a file that ends sooner reports them once.
PROGRESS_EVERY = 0.1
# Above this many bytes waiting in the socket, a worker waits for the parent.
_BACKLOG = 1 << 20
_LENGTH = struct.Struct("<I")
# Imported once in the pool's fork server, shared by the workers it forks
# (each imported its own: ~11 MB of aiohttp and the downloader apiece).
_WORKER_MODULES = (
    "asyncconc.downloader._pipeline",
    "asyncconc.downloader._sharded",
    "asyncconc.downloader._spread",
)
# A result crosses as its fields but the URL (the parent has it: the line's).
_RESULT_FIELDS = tuple(f.name for f in fields(DownloadResult))
assert _RESULT_FIELDS[0] == "url"
_result_values = operator.attrgetter(*_RESULT_FIELDS[1:])


def shard_requests(requests: Sequence[DownloadRequest], shards: int) -> list[list[_Item]]:
    """Split ``requests`` into ``shards`` lists, keeping same-name lines together.

    Each first-choice name (the list's, else the URL's) goes to the shard
    with the fewest lines so far; order inside a shard is list order.
    """
    out: list[list[_Item]] = [[] for _ in range(shards)]
    home: dict[str, int] = {}
    for index, request in enumerate(requests):
        wanted = request.name.as_posix() if request.name else choose_name(request.url)
        key = wanted.casefold()
        shard = home.get(key)
        if shard is None:
            shard = home[key] = min(range(shards), key=lambda k: len(out[k]))
        out[shard].append((index, request))
    return [shard for shard in out if shard]


def _frame(messages: list[_Message]) -> bytes:
    data = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> list[_Message] | None:
    """The next frame's messages; ``None`` at a clean end of the stream."""
    try:
        header = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    messages: list[_Message] = pickle.loads(await reader.readexactly(_LENGTH.unpack(header)[0]))
    return messages


# -- worker side ---------------------------------------------------------------


class _Link:
    """A worker's end of the socket: messages queued, written in one frame."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._queue: list[_Message] = []
        self._soon: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None
        self._bytes: dict[str, int] = {}  # progress not sent yet, per URL
        self._tick: asyncio.TimerHandle | None = None

    def send(self, message: _Message, *, urgent: bool = False) -> None:
        self._queue.append(message)
        if urgent:
            if self._soon is None:
                self._soon = self._loop.call_soon(self.flush)
        elif self._later is None and self._soon is None:
            self._later = self._loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Write everything queued, in one frame."""
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._queue and not self._writer.is_closing():
            queue, self._queue = self._queue, []
            self._writer.write(_frame(queue))

    @property
    def backlogged(self) -> bool:
        return self._writer.transport.get_write_buffer_size() > _BACKLOG

    def progress(self, url: str, nbytes: int) -> None:
        self._bytes[url] = self._bytes.get(url, 0) + nbytes
        if self._tick is None:
            self._tick = self._loop.call_later(PROGRESS_EVERY, self._send_progress)

    def _send_progress(self) -> None:
        self._tick = None
        for url, nbytes in self._bytes.items():
            self.send(("progress", url, nbytes))
        self._bytes.clear()

    def _progress_of(self, url: str) -> None:
        """What arrived for ``url`` goes before its next started/finished."""
        nbytes = self._bytes.pop(url, 0)
        if nbytes:
            self.send(("progress", url, nbytes))

    def started(self, event: DownloadStarted) -> None:
        self._progress_of(event.url)
        self.send(("started", event.url, event.path, event.total, event.resumed_from))

    def finished(self, index: int, result: DownloadResult) -> None:
        self._progress_of(result.url)
        self.send(("finished", index, _result_values(result)))

    def close(self) -> None:
        """Send what is left (progress included) and close; idempotent."""
        if self._tick is not None:
            self._tick.cancel()
        self._send_progress()  # sets _tick to None
        self.flush()
        self._writer.close()


class _Names:
    """The worker's NameClaimer: first names taken from batches claimed ahead.

    The parent claims every line's first choice in list order, over all
    shards (:class:`_Claims`); this worker asks for the names of its next
    lines in batches. The n-th download to claim its first name is the n-th
    line of the shard that claims one, because the pipeline starts
    downloads in list order and each claims before its first await; a
    download says which claim is its first (``first=True``). Later claims (a
    server-given name, a name holding another URL's file) are single round
    trips, first-come.
    """

    def __init__(self, link: _Link, shard: int, count: int, concurrency: int) -> None:
        self._link = link
        self._shard = shard
        self._count = count  # lines of this shard that claim a name
        self._names: list[tuple[str, str] | None] = []  # (guessed first choice, name)
        self._asked = 0
        self._bound = 0  # downloads that took their first name
        self._low = max(8, concurrency)
        self._batch = max(16, 2 * concurrency)
        self._changed = asyncio.Event()
        self._pending: dict[int, asyncio.Future[str]] = {}
        self._next = 0
        self._lost = False
        # Messages that are not about names (segments, stop); called when lost.
        self.other: Callable[[_Message], None] = lambda message: None
        self.on_lost: Callable[[], None] = lambda: None

    def ask_ahead(self) -> None:
        """Ask for the next batch when few names are left in hand."""
        if self._asked - self._bound >= self._low:
            return
        count = min(self._batch, self._count - self._asked)
        if count > 0:
            self._link.send(("claims", self._shard, self._asked, count), urgent=True)
            self._asked += count

    async def aclaim(self, wanted: PurePosixPath, *, first: bool = False) -> PurePosixPath:
        if not first or self._bound >= self._count:
            return PurePosixPath(await self._claim_one(wanted.as_posix()))
        at = self._bound
        self._bound += 1
        self.ask_ahead()
        while len(self._names) <= at:
            if self._lost:
                raise ConnectionError("lost the parent process")
            await self._changed.wait()
        entry = self._names[at]
        self._names[at] = None  # handed out: not kept for a long list
        assert entry is not None
        guessed, name = entry
        path = wanted.as_posix()
        if guessed == path:
            return PurePosixPath(name)
        # Not the name guessed (the index changed since the parent read it):
        # give that one back and claim this one, first-come.
        self._link.send(("release", name))
        return PurePosixPath(await self._claim_one(path))

    def release(self, path: PurePosixPath) -> None:
        self._link.send(("release", path.as_posix()))

    async def _claim_one(self, wanted: str) -> str:
        self._next += 1
        ident = self._next
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        self._link.send(("claim", ident, wanted), urgent=True)
        try:
            return await future
        finally:
            self._pending.pop(ident, None)

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def answer(self, message: _Message) -> None:
        if message[0] == "names":
            self._names.extend(message[2])
            self._pulse()
        elif message[0] == "name":
            future = self._pending.get(message[1])
            if future is not None and not future.done():
                future.set_result(message[2])
        else:
            self.other(message)

    async def read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while (frame := await _read_frame(reader)) is not None:
                for message in frame:
                    self.answer(message)
        finally:
            self._lost = True
            self._pulse()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("lost the parent process"))
            self.on_lost()


def first_choices(
    requests: Sequence[DownloadRequest], dest: Path, *, overwrite: bool
) -> list[str | None]:
    """The name each line will claim first (``None``: it claims none).

    Mirrors the start of ``_Job.run`` in :mod:`._fetching` (the list's name,
    else the index's record of the URL, else the URL's name). A wrong guess
    costs that line one round trip and makes its name first-come; it is
    never a wrong name (see :class:`_Names`).
    """
    from asyncconc.downloader._index import SavedIndex

    index = None if overwrite else SavedIndex.load(dest)
    limit = name_max(dest)
    out: list[str | None] = []
    for request in requests:
        if request.problem is not None:
            out.append(None)  # fails before it claims anything
        elif request.name is not None:
            out.append(request.name.as_posix())
        else:
            record = index.get(request.url) if index is not None else None
            out.append(
                record.path.as_posix()
                if record is not None
                else choose_name(request.url, limit=limit)
            )
    return out


class _Claims:
    """The parent's side of names claimed ahead: list order over all shards.

    A shard asking for the names of its next lines makes the parent claim
    every line's first choice up to the last of those, of every shard, in
    list order: exactly the order of one process, whichever worker runs
    ahead, so a collision across shards (``a.bin`` twice in one worker,
    ``a-2.bin`` named in the list in the other) resolves as in one process.
    """

    def __init__(
        self, names: NameAllocator, choices: list[str | None], shards: list[list[_Item]]
    ) -> None:
        self._names = names
        self._choices = choices
        self._claimed: dict[int, str] = {}  # line -> name, until handed out
        self._cursor = 0
        self._lines = [[i for i, _ in shard if choices[i] is not None] for shard in shards]

    def take(self, shard: int, start: int, count: int) -> list[tuple[str, str]]:
        lines = self._lines[shard][start : start + count]
        if lines:
            choices, claimed, claim = self._choices, self._claimed, self._names.claim_name
            while self._cursor <= lines[-1]:
                wanted = choices[self._cursor]
                if wanted is not None:
                    claimed[self._cursor] = claim(wanted)
                self._cursor += 1
        out = []
        for line in lines:
            wanted = self._choices[line]
            assert wanted is not None
            out.append((wanted, self._claimed.pop(line)))
            self._choices[line] = None  # handed out: not needed again (~60 B a line)
        return out


async def download_shard(
    address: str,
    shard: int,
    dest: str,
    items: list[tuple[int, WireRequest]],
    options: dict[str, Any],
    index_bytes: int | None = None,
    processes: int = 1,
) -> int:
    """Worker side: download ``items`` and report everything to the parent.

    Runs on the worker's own event loop (a coroutine function task of the
    pool). Returns how many results were sent. ``index_bytes``: the size of
    the folder's index when the run began (records other workers add must
    not change this one's names). ``processes`` > 1 with a ``split``
    option: segments are spread over the workers (:mod:`._spread`), and this
    one serves the others' segments until the parent says stop.
    """
    # Here, not at the top: the parent never needs aiohttp.
    from asyncconc._malloc import tune_for_streaming
    from asyncconc.downloader._pipeline import Downloader
    from asyncconc.downloader._segmented import SEGMENT_HELPERS
    from asyncconc.downloader._spread import Delegations, SegmentHelper

    tune_for_streaming()  # a worker process of the command line's own pool

    lines = [index for index, _ in items]  # this shard's line numbers in the list
    wires: list[WireRequest | None] = [wire for _, wire in items]
    items.clear()  # unpickled for this call alone
    claiming = sum(wire is not None and wire[4] is None for wire in wires)  # no problem

    def one_by_one() -> Iterator[DownloadRequest]:
        # A request is built when its download takes it, and its fields are
        # dropped then: what the worker holds shrinks as the run goes.
        for local, wire in enumerate(wires):
            wires[local] = None
            assert wire is not None
            yield DownloadRequest._from_wire(wire)  # the pipeline checks it

    reader, writer = await asyncio.open_unix_connection(address)
    link = _Link(writer)
    names = _Names(link, shard, claiming, int(options.get("concurrency", 16)))
    spreading = processes > 1 and int(options.get("split", 1)) > 1
    delegations = Delegations(link.send, processes)
    helper = SegmentHelper(link.send)
    stop = asyncio.Event()

    def other(message: _Message) -> None:
        op = message[0]
        if op == "seg":
            helper.start(*message[1:])
        elif op == "seg-cancel":
            helper.cancel(*message[1:])
        elif op in ("seg-done", "seg-end"):
            delegations.answer(message)
        elif op == "stop":
            stop.set()

    def lost() -> None:
        delegations.lost()
        stop.set()

    names.other, names.on_lost = other, lost
    answers = asyncio.create_task(names.read_answers(reader))
    link.send(("hello", shard))
    names.ask_ahead()
    token = SEGMENT_HELPERS.set(delegations if spreading else None)

    def on_event(event: DownloadEvent) -> None:
        if type(event) is DownloadProgress:
            link.progress(event.url, event.nbytes)
        elif type(event) is DownloadStarted:
            link.started(event)

    def report(local: int, result: DownloadResult) -> None:
        # Also for what was in flight when cancelled: sent as it stands (the
        # parent reports it; close() flushes it before the socket closes).
        link.finished(lines[local], result)

    sent = 0
    try:
        downloader = Downloader(dest, on_event=on_event, **options)
        async with (
            downloader,
            contextlib.aclosing(
                downloader._run(one_by_one(), names=names, leftover=report, index_bytes=index_bytes)
            ) as results,
        ):
            async for local, result in results:
                report(local, result)
                sent += 1
                if link.backlogged:
                    link.flush()
                    await writer.drain()
        if spreading:  # the others' segments may still need this process
            link.flush()
            await stop.wait()
        return sent
    finally:
        SEGMENT_HELPERS.reset(token)
        # Each segment task writes what it received, synchronously, when
        # cancelled; the wait is for that and its last message.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE):
                await helper.aclose()
        answers.cancel()
        link.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# -- parent side ---------------------------------------------------------------


@dataclass(slots=True)
class _Parent:
    on_event: Callable[[DownloadEvent], None]
    claims: _Claims
    names: NameAllocator
    urls: list[str]
    results: deque[tuple[int, DownloadResult]] = field(default_factory=deque)
    connected: set[int] = field(default_factory=set)
    closed: set[int] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Segments spread over the workers (see _spread): each worker's socket,
    # who fills which job ((owner, job) -> helper), messages to pass on.
    writers: dict[int, asyncio.StreamWriter] = field(default_factory=dict)
    jobs: dict[tuple[int, int], int] = field(default_factory=dict)
    outbox: dict[int, list[_Message]] = field(default_factory=dict)
    turn: int = 0
    # Jobs no other worker can take yet: held until one says hello (a worker
    # still starting) or none can come any more (give_up_waiting).
    waiting: list[tuple[int, int, Any]] = field(default_factory=list)
    expected: int = 0  # workers of the run
    stopping: bool = False  # stop_all was sent: a worker saying hello now gets it too
    # Lines each shard has not finished (filled in by run_sharded).
    unfinished: list[int] = field(default_factory=list)
    shard_of: dict[int, int] = field(default_factory=dict)

    async def wait_all_closed(self) -> None:
        """Until every worker that connected has hung up."""
        while not self.connected <= self.closed:
            self.changed.clear()
            await self.changed.wait()

    def _claim(self, path: str) -> str:
        return self.names.claim_name(path)

    def handle(
        self, frame: list[_Message], sender: int | None = None
    ) -> tuple[int | None, list[_Message]]:
        """Act on one frame; (the shard it said hello for, the answers to send).

        Messages for other workers go to :attr:`outbox`.
        """
        on_event = self.on_event
        answers: list[_Message] = []
        hello = None
        for message in frame:
            op = message[0]
            if op == "finished":
                # The URL string the parent already holds, not the frame's copy.
                index, values = message[1], message[2]
                result = DownloadResult(self.urls[index], *values)
                on_event(DownloadFinished(result))
                self.results.append((index, result))
                shard = self.shard_of.pop(index, None)
                if shard is not None:
                    self.unfinished[shard] -= 1
            elif op.startswith("seg"):
                assert sender is not None
                self._segment(sender, message, answers)
            elif op == "started":
                on_event(DownloadStarted(*message[1:]))
            elif op == "progress":
                on_event(DownloadProgress(message[1], message[2]))
            elif op == "claims":
                _, shard, start, count = message
                answers.append(("names", start, self.claims.take(shard, start, count)))
            elif op == "claim":
                answers.append(("name", message[1], self._claim(message[2])))
            elif op == "release":
                self.names.release_name(message[1])
            elif op == "hello":
                hello = sender = message[1]
                self.connected.add(message[1])
        return hello, answers

    def _segment(self, sender: int, message: _Message, answers: list[_Message]) -> None:
        """Pass a segment message between an owner and a helper."""
        op = message[0]
        if op == "seg":  # from an owner: a job for the next other live worker
            _, job, spec = message
            others = sorted(k for k in self.writers if k != sender and k not in self.closed)
            if others:
                helper = others[self.turn % len(others)]
                self.turn += 1
                self._assign(helper, sender, job, spec)
            elif len(self.connected) < self.expected:
                self.waiting.append((sender, job, spec))  # a worker still starting
            else:
                answers.append(("seg-end", job, None, ("retry", "no other worker process")))
        elif op == "seg-cancel":  # from an owner
            self.waiting = [w for w in self.waiting if w[:2] != (sender, message[1])]
            helper_of = self.jobs.pop((sender, message[1]), None)
            if helper_of is not None:
                self.outbox.setdefault(helper_of, []).append(("seg-cancel", sender, message[1]))
        else:  # seg-done / seg-end from a helper: to the owner
            owner, job = message[1], message[2]
            if op == "seg-end":
                self.jobs.pop((owner, job), None)
            self.outbox.setdefault(owner, []).append((op, job, *message[3:]))

    def _assign(self, helper: int, owner: int, job: int, spec: Any) -> None:
        self.jobs[owner, job] = helper
        self.outbox.setdefault(helper, []).append(("seg", owner, job, spec))

    def _hello(self, shard: int) -> None:
        """A worker is ready: it takes the jobs that waited for another worker."""
        waiting, self.waiting = self.waiting, []
        for owner, job, spec in waiting:
            if owner == shard:  # its own hello came in the frame that asked
                self.waiting.append((owner, job, spec))
            elif owner in self.writers:  # else its owner is gone
                self._assign(shard, owner, job, spec)

    def give_up_waiting(self) -> None:
        """No other worker will come: the owners fill the waiting jobs themselves."""
        waiting, self.waiting = self.waiting, []
        for owner, job, _ in waiting:
            refused = ("seg-end", job, None, ("retry", "no other worker process"))
            self.outbox.setdefault(owner, []).append(refused)
        self._send_outbox()

    def _lost_worker(self, shard: int) -> None:
        """A worker hung up: its helpers stop, its owners do its segments themselves."""
        self.writers.pop(shard, None)
        self.waiting = [w for w in self.waiting if w[0] != shard]
        for (owner, job), helper in list(self.jobs.items()):
            if helper == shard:
                del self.jobs[owner, job]
                lost = ("retry", "the helper process stopped")
                self.outbox.setdefault(owner, []).append(("seg-end", job, None, lost))
            elif owner == shard:
                del self.jobs[owner, job]
                self.outbox.setdefault(helper, []).append(("seg-cancel", owner, job))
        self._send_outbox()

    def _send_outbox(self) -> None:
        outbox, self.outbox = self.outbox, {}
        for shard, messages in outbox.items():
            writer = self.writers.get(shard)
            if writer is not None and not writer.is_closing():
                writer.write(_frame(messages))

    def stop_all(self) -> None:
        """Every shard is done: the workers that wait to help may go."""
        self.stopping = True
        for writer in self.writers.values():
            if not writer.is_closing():
                writer.write(_frame([("stop",)]))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        shard: int | None = None
        try:
            while (frame := await _read_frame(reader)) is not None:
                hello, answers = self.handle(frame, shard)
                if hello is not None:
                    shard = hello
                    self.writers[shard] = writer
                    if self.stopping:
                        writer.write(_frame([("stop",)]))
                    self._hello(shard)
                if answers:
                    writer.write(_frame(answers))
                if self.outbox:
                    self._send_outbox()
                self.changed.set()
        except (ConnectionError, asyncio.IncompleteReadError, pickle.UnpicklingError, EOFError,
                ValueError, KeyError, TypeError, IndexError):  # fmt: skip
            pass  # a worker that died mid-frame: its URLs are failed below
        finally:
            if shard is not None:
                self.closed.add(shard)
                self._lost_worker(shard)
            self.changed.set()
            writer.close()


def worker_pool(workers: int, loop: str = "auto") -> LoopPool:
    """The pool :func:`run_sharded` runs on, not yet started.

    A caller may start it before the list is parsed (its fork server
    imports the downloader in another process meanwhile) and pass it on.
    """
    from asyncconc.pool import LoopPool  # the pool is only needed here

    return LoopPool(max(1, workers), concurrency=1, loop=loop, preload=_WORKER_MODULES)


async def run_sharded(
    requests: Sequence[DownloadRequest],
    dest: Path,
    *,
    workers: int,
    on_event: Callable[[DownloadEvent], None],
    options: dict[str, Any],
    loop: str = "auto",
    leftover: Callable[[int, DownloadResult], None] | None = None,
    pool: LoopPool | None = None,
) -> AsyncGenerator[tuple[int, DownloadResult], None]:
    """Download ``requests`` over ``workers`` processes; yield (index, result).

    ``options`` are :class:`Downloader` keyword options; ``concurrency`` is
    the total, split evenly over the workers. ``leftover``: as for
    ``Downloader._run``, the results the workers sent while being stopped.
    ``pool``: a started :func:`worker_pool` of at least ``workers``
    processes, left open (the caller closes it); else one is started and
    closed here, with one process per shard.
    """
    choices = first_choices(requests, dest, overwrite=bool(options.get("overwrite")))
    shards = shard_requests(requests, workers)
    spreading = workers > 1 and int(options.get("split", 1)) > 1
    if spreading:  # every worker, also one with no line: it fills segments
        shards += [[] for _ in range(workers - len(shards))]
    per_worker = dict(options)
    total = int(per_worker.pop("concurrency", 16))
    per_worker["concurrency"] = max(1, -(-total // max(1, len(shards))))
    names = NameAllocator()
    parent = _Parent(on_event, _Claims(names, choices, shards), names, [r.url for r in requests])
    parent.unfinished = [len(shard) for shard in shards]
    parent.shard_of = {index: k for k, shard in enumerate(shards) for index, _ in shard}
    processes = len(shards) if spreading else 1
    parent.expected = len(shards)
    # What the parent keeps of a shard is its line numbers; the workers get
    # the requests' plain fields (the submit holds them for the whole run).
    lines_of = [[index for index, _ in shard] for shard in shards]
    wires = [[(index, request._wire()) for index, request in shard] for shard in shards]
    del shards
    reported = bytearray(len(requests))  # 1 per line: a set cost ~60 B a line
    index_bytes = _index_size(dest)
    with tempfile.TemporaryDirectory(prefix="asyncconc-") as tmp:
        address = os.path.join(tmp, "names.sock")
        server = await asyncio.start_unix_server(parent.serve, address)
        owned = pool is None
        if pool is None:
            pool = worker_pool(len(lines_of), loop)
        async with server, pool if owned else contextlib.nullcontext():
            tasks = {
                asyncio.create_task(
                    pool.submit(
                        download_shard,
                        address,
                        k,
                        str(dest),
                        wire,
                        per_worker,
                        index_bytes,
                        processes,
                    )
                ): k
                for k, wire in enumerate(wires)
            }
            for task in tasks:
                task.add_done_callback(lambda _: parent.changed.set())

            def gone(task: asyncio.Task[int], k: int) -> bool:
                return k in parent.closed or (task.done() and k not in parent.connected)

            def ended() -> bool:
                return all(gone(task, k) for task, k in tasks.items())

            stopped = not spreading
            try:
                while True:
                    while parent.results:
                        index, result = parent.results.popleft()
                        reported[index] = 1
                        yield index, result
                    if parent.waiting and all(
                        task.done() for task, k in tasks.items() if k not in parent.connected
                    ):
                        parent.give_up_waiting()  # the workers that never came will not
                    if not stopped and all(
                        parent.unfinished[k] <= 0 or gone(task, k) for task, k in tasks.items()
                    ):
                        parent.stop_all()  # no line left to download: helpers may go
                        stopped = True
                    if ended():
                        break
                    parent.changed.clear()
                    if not parent.results:
                        await parent.changed.wait()
                # A shard whose worker died: fail what it had not finished.
                for task, k in tasks.items():
                    error = await _shard_error(task)
                    for index in lines_of[k]:
                        if not reported[index]:
                            result = DownloadResult.unfinished(
                                requests[index], error or "the worker process stopped"
                            )
                            on_event(DownloadFinished(result))
                            reported[index] = 1
                            yield index, result
            finally:
                # Cancelling a submit cancels the shard coroutine in its
                # worker; give the workers a moment to unwind (each download
                # saves what it holds to its .part) before the pool stops them.
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
                unwound = asyncio.create_task(parent.wait_all_closed())
                await asyncio.wait({unwound}, timeout=STOP_GRACE)
                unwound.cancel()
                while leftover is not None and parent.results:
                    index, result = parent.results.popleft()
                    if not reported[index]:
                        reported[index] = 1
                        leftover(index, result)


def _index_size(dest: Path) -> int:
    try:
        return os.stat(dest / INDEX_NAME).st_size
    except OSError:
        return 0


async def _shard_error(task: asyncio.Task[int]) -> str | None:
    await asyncio.wait({task})
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return None if exc is None else f"worker process failed: {exc}"
