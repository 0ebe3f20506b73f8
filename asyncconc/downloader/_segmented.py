"""One file over several connections (``--split N``): Range segments written in place.

When ``split > 1`` and the first answer for a URL is a ``200`` that says
``Accept-Ranges: bytes`` with a ``Content-Length`` of at least
``2 * MIN_SEGMENT``, the file is cut into up to ``split`` segments. The first
segment is read from that first answer (its connection is closed once the
segment is complete); every other segment gets its own ``GET`` with
``Range: bytes=A-B`` and ``If-Range`` (the first answer's strong ETag, else
its Last-Modified). Each connection writes its bytes into ``NAME.part`` at
their offsets with ``os.pwritev`` from a worker thread (one write in flight
per segment, so memory stays under ``2 * SEGMENT_FLUSH_BYTES`` = 1 MiB per
segment), in batches of ``SEGMENT_FLUSH_BYTES`` or after ``FLUSH_AGE`` (1 s),
whichever comes first, as the one-connection path does; on Ctrl-C or an
error what was received is written before the sidecar is saved.

Never corrupt:

* the final name appears only after every segment is complete, the file
  has the announced length and (when asked for) the sha256 matches; it is
  an ``os.replace`` of the ``.part``;
* every ``206`` must start where it was asked to, announce the same total
  length and carry the same validator; a ``200`` to a segment request means
  the server ignored the Range or the file changed (If-Range): the
  segmented state is dropped and the file starts again on one connection;
* progress survives a crash: the ``NAME.part.meta`` sidecar records, for
  each segment, how many bytes from its start are on disk, and is replaced
  atomically (write a temporary file, ``os.replace``) only after those bytes
  were written (at the latest ``SAVE_SECONDS`` after a write completes), so
  after Ctrl-C or SIGKILL it never claims more than the ``.part`` holds.
  (Written to the page cache, not ``fsync``-ed: it survives a killed
  process, not a power cut, like a one-connection ``.part``.)

Resuming: a later run finds the sidecar's ``segments`` (whatever its own
``--split``) and asks only for the missing part of every segment, with
``If-Range``; without a validator it cannot prove the file unchanged and
starts again.

Falls back to the one-connection path (returns ``None``) when the server
does not announce byte ranges, the length is unknown or small, or the
answer came from another origin after a redirect.

Spread over processes: when the download runs inside a ``--workers`` worker,
:data:`SEGMENT_HELPERS` holds the worker's :class:`SegmentHelpers` and every
segment whose index is not a multiple of ``processes`` is filled by another
worker process (see :mod:`asyncconc.downloader._spread`); this process keeps
the sidecar and counts a delegated segment's bytes only when the helper says
they are written. A helper that fails or dies hands the segment back: it is
redone here from what was reported.

This module does not import the fetching code (which calls it): failures
come back as :class:`SegmentRetry` (transient: the caller retries, and the
retry resumes) or :class:`SegmentRestart` (start the file again).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from asyncconc._errors import IntegrityError, WriteError
from asyncconc.downloader._http1 import Answer, DetachedBody
from asyncconc.downloader._models import DownloadEvent, DownloadProgress, DownloadStarted
from asyncconc.downloader._sessions import Sessions, is_body_error
from asyncconc.downloader._writing import (
    FLUSH_AGE,
    FLUSH_BYTES,
    RECEIVE_BUFFER,
    ReceiveBudget,
    Receiver,
    Waiter,
    create_file,
    meta_path,
    part_path,
    run_receiver,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp

    Response = aiohttp.ClientResponse | Answer

__all__ = [
    "MIN_SEGMENT",
    "SEGMENT_HELPERS",
    "SegmentHelpers",
    "SegmentRestart",
    "SegmentRetry",
    "SegmentedFetch",
    "plan_segments",
    "resume_segmented",
    "start_segmented",
]

# Below this per segment another connection costs more than it brings.
MIN_SEGMENT = 1 << 20
# The sidecar is rewritten when a segment has this many more bytes on disk, or
# this long after its last update (so a kill loses at most ~that much work).
SAVE_EVERY = 8 << 20
SAVE_SECONDS = 0.5
# Half a one-connection batch: a split file has up to N streams in flight (and
# with --workers every process holds some), and at 1 MiB a batch 4 x 256 MiB
# over --split 4 --workers 2 peaked at 111 MB summed (2026-12-02).
SEGMENT_FLUSH_BYTES = FLUSH_BYTES // 2
_OPEN_FLAGS = os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ_CHUNK = 1 << 20


class SegmentRetry(Exception):
    """A transient failure; the progress is saved and a retry resumes it."""


class SegmentRestart(Exception):
    """Start this file again; ``split_off``: on one connection."""

    def __init__(self, message: str, *, split_off: bool) -> None:
        super().__init__(message)
        self.split_off = split_off


# What a helper process reports when it hands a segment back: a kind
# ("restart", "changed", "write", "retry") and the reason in words.
Outcome = tuple[str, str]


class SegmentHelpers(Protocol):
    """Other processes that can fill segments of this process's files."""

    @property
    def processes(self) -> int:
        """How many processes share the segments, this one included."""
        ...

    async def fill(self, spec: dict[str, Any], on_done: Callable[[int], None]) -> Outcome | None:
        """Have another process fill the segment ``spec`` describes.

        ``on_done(n)``: ``n`` bytes from the segment's start are now on disk.
        ``None``: the segment is complete; else why it was handed back.
        Cancelling stops the helper (it may still finish a write in flight).
        """
        ...


# Set by a --workers worker for the downloads it runs (a context variable, so
# that the per-file fetching code passes nothing along); None in one process.
SEGMENT_HELPERS: contextvars.ContextVar[SegmentHelpers | None] = contextvars.ContextVar(
    "SEGMENT_HELPERS", default=None
)


@dataclass(slots=True)
class SegmentedFetch:
    """What one segmented download needs from its caller."""

    sessions: Sessions
    url: str
    rel: str
    target: Path
    headers: Mapping[str, str]
    emit: Callable[[DownloadEvent], None]
    checksum: bool
    expected_sha256: str | None
    # The caller knows NAME.part was not there: one found now is another
    # program's, refused rather than replaced (see PartFile.expect_new).
    part_new: bool = False
    # Threads for large segments on asyncconc's own connections (None: none).
    receivers: ReceiveBudget | None = None


@dataclass(slots=True)
class _Segment:
    start: int
    end: int  # exclusive
    done: int = 0  # bytes from ``start`` that are on disk
    saved: int = 0  # ``done`` as last recorded in the sidecar
    pending: Waiter | None = None  # set when the write in flight is over
    future: asyncio.Future[None] | None = None  # that write, for the loop side
    chunks: list[bytes | memoryview] = field(default_factory=list)  # received, not yet handed over
    gathered: int = 0  # their length
    next_offset: int = 0  # where ``chunks`` go
    timer: asyncio.TimerHandle | None = None  # the FLUSH_AGE flush
    stop: Callable[[], None] | None = None  # stops the thread receiving it, if one does

    @property
    def complete(self) -> bool:
        return self.start + self.done >= self.end


def plan_segments(size: int, split: int) -> list[tuple[int, int]]:
    """``[start, end)`` of up to ``split`` segments of ``size`` bytes, each >= MIN_SEGMENT."""
    count = max(1, min(split, size // MIN_SEGMENT))
    step = -(-size // count)
    return [(a, min(a + step, size)) for a in range(0, size, step)]


def _validator(etag: str | None, last_modified: str | None) -> str | None:
    if etag and not etag.startswith("W/"):
        return etag
    return last_modified


@dataclass(slots=True)
class _State:
    """The ``.part`` being filled and its sidecar."""

    fetch: SegmentedFetch
    url: str  # where the segments are asked for
    total: int
    etag: str | None
    last_modified: str | None
    segments: list[_Segment]
    fd: int | None = None
    saved_at: float = 0.0
    # A helper's state: called after each write instead of saving the sidecar.
    report: Callable[[_Segment], None] | None = None

    @property
    def part(self) -> Path:
        return part_path(self.fetch.target)

    @property
    def meta(self) -> Path:
        return meta_path(self.fetch.target)

    @property
    def done(self) -> int:
        return sum(s.done for s in self.segments)

    def save(self) -> None:
        """Record every segment's progress: a temporary file, then ``os.replace``."""
        text = json.dumps(
            {
                "url": self.fetch.url,
                "etag": self.etag,
                "last_modified": self.last_modified,
                "size": self.total,
                "segments": [[s.start, s.end, s.done] for s in self.segments],
            }
        )
        tmp = self.meta.with_name(self.meta.name + f".{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o644)
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, self.meta)
        self.saved_at = time.monotonic()
        for s in self.segments:
            s.saved = s.done

    def open_fresh(self) -> None:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        if self.fetch.part_new:
            # The empty .part first, so that one another program made
            # meanwhile is refused before its sidecar is touched; killed
            # before the sidecar, an empty .part restarts.
            self.fd = create_file(str(self.part), replace=False)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.meta)  # never written through a planted symlink
            self.save()
        else:
            for path in (self.part, self.meta):  # never written through a planted symlink
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            # The sidecar first: a full-length .part (all holes) without it
            # would look finished to the one-connection path (a 416 to its
            # Range). Killed here, a sidecar without a .part is ignored; a
            # short .part restarts.
            self.save()
            self.fd = os.open(self.part, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o644)
        os.ftruncate(self.fd, self.total)

    def open_existing(self) -> None:
        fd = os.open(self.part, _OPEN_FLAGS)
        if os.fstat(fd).st_size != self.total:
            os.close(fd)
            raise SegmentRestart("the .part file changed size", split_off=False)
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def discard(self) -> None:
        self.close()
        for path in (self.part, self.meta):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def write(self, segment: _Segment, chunks: list[bytes | memoryview], offset: int) -> None:
        """Worker thread: ``chunks`` at ``offset``; then count them as done."""
        assert self.fd is not None
        total = sum(map(len, chunks))
        views = [memoryview(c) for c in chunks]
        written = 0
        while written < total:
            n = os.pwritev(self.fd, views, offset + written)
            written += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]
        segment.done += total

    def digest(self) -> str:
        digest = hashlib.sha256()
        with open(self.part, "rb") as fh:
            while block := fh.read(_READ_CHUNK):
                digest.update(block)
        return digest.hexdigest()


def _same_origin(a: str, b: str) -> bool:
    return urlsplit(a)[:2] == urlsplit(b)[:2]


async def start_segmented(
    fetch: SegmentedFetch, response: Response, split: int
) -> tuple[int, str | None] | None:
    """Download ``fetch.url`` in segments, reading the first from ``response`` (a 200).

    Returns (bytes, sha256 or ``None``), or ``None`` without reading anything
    when this answer cannot be segmented (the caller saves it on one
    connection). Raises :class:`SegmentRetry`, :class:`SegmentRestart`,
    :class:`~asyncconc.IntegrityError` or :class:`~asyncconc.WriteError`.
    """
    total = response.content_length
    ranges = response.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
    url = str(response.url)
    encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    if (
        split < 2
        or not ranges
        or encoded
        or total is None
        or total < 2 * MIN_SEGMENT
        or not _same_origin(url, fetch.url)
    ):
        return None
    state = _State(
        fetch,
        url,
        total,
        response.headers.get("ETag"),
        response.headers.get("Last-Modified"),
        [_Segment(a, b) for a, b in plan_segments(total, split)],
    )
    try:
        await asyncio.to_thread(state.open_fresh)
    except OSError as exc:
        raise WriteError(f"cannot write {state.part}: {exc.strerror}", url=fetch.url) from exc
    fetch.emit(DownloadStarted(fetch.url, fetch.rel, total, 0))
    return await _run(state, response)


async def resume_segmented(
    fetch: SegmentedFetch, meta: Mapping[str, Any]
) -> tuple[int, str | None]:
    """Finish a segmented ``.part`` whose sidecar holds ``meta``; as :func:`start_segmented`."""
    try:
        total = int(meta["size"])
        segments = [_Segment(int(a), int(b), int(d)) for a, b, d in meta["segments"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise SegmentRestart("unreadable segment state", split_off=False) from exc
    covered = [(s.start, s.end) for s in segments]
    if (
        not segments
        or covered[0][0] != 0
        or covered[-1][1] != total
        or any(a[1] != b[0] for a, b in itertools.pairwise(covered))
        or any(not 0 <= s.done <= s.end - s.start for s in segments)
    ):
        raise SegmentRestart("inconsistent segment state", split_off=False)
    if meta.get("url") not in (None, fetch.url):
        raise SegmentRestart("the .part was for another URL", split_off=False)
    etag, last_modified = meta.get("etag"), meta.get("last_modified")
    if _validator(etag, last_modified) is None:
        # Without If-Range a changed file would be stitched from two versions.
        raise SegmentRestart("no validator to resume segments with", split_off=False)
    state = _State(fetch, fetch.url, total, etag, last_modified, segments)
    for s in segments:
        s.saved = s.done
    try:
        await asyncio.to_thread(state.open_existing)
    except FileNotFoundError as exc:
        raise SegmentRestart("the .part file is gone", split_off=False) from exc
    except OSError as exc:
        raise WriteError(f"cannot write {state.part}: {exc.strerror}", url=fetch.url) from exc
    fetch.emit(DownloadStarted(fetch.url, fetch.rel, total, state.done))
    return await _run(state, None)


async def _run(state: _State, first: Response | None) -> tuple[int, str | None]:
    """Fill every unfinished segment at once; commit when all are complete."""
    committed = False
    helpers = SEGMENT_HELPERS.get()
    spread = helpers.processes if helpers is not None else 1
    try:
        try:
            async with asyncio.TaskGroup() as group:
                for index, segment in enumerate(state.segments):
                    if segment.complete:
                        continue
                    if helpers is not None and index % spread:
                        group.create_task(_delegated(state, segment, helpers))
                    else:
                        source = first if index == 0 else None
                        group.create_task(_fill(state, segment, source))
        except BaseExceptionGroup as group_error:
            # One reason is enough; prefer a restart, then a hard error.
            errors = group_error.exceptions
            for kind in (SegmentRestart, IntegrityError, WriteError, SegmentRetry):
                for exc in errors:
                    if isinstance(exc, kind):
                        raise exc from None
            raise
        if not all(s.complete for s in state.segments) or state.done != state.total:
            raise SegmentRetry("segments ended early")
        digest = await _commit(state)
        committed = True
        return state.total, digest
    except SegmentRestart:
        _finish_writes(state)
        state.discard()
        raise
    finally:
        if not committed:
            _finish_writes(state)
            state.close()
            if state.part.exists():
                with contextlib.suppress(OSError):
                    state.save()


def _finish_writes(state: _State) -> None:
    """Wait (synchronously: we may be cancelled) for every write in flight; write the rest.

    What was received but not yet written is written here, when every earlier
    byte of its segment is on disk, so Ctrl-C loses nothing received.
    """
    for s in state.segments:
        stop, s.stop = s.stop, None
        if stop is not None:
            stop()
        pending, s.pending = s.pending, None
        if pending is not None:
            pending.wait()
        s.future = None
        if s.timer is not None:
            s.timer.cancel()
            s.timer = None
        chunks, s.chunks, s.gathered = s.chunks, [], 0
        if chunks and state.fd is not None and s.start + s.done == s.next_offset:
            with contextlib.suppress(OSError):
                state.write(s, chunks, s.next_offset)


async def _commit(state: _State) -> str | None:
    fetch = state.fetch

    def finish() -> str | None:
        state.close()
        if os.stat(state.part).st_size != state.total:
            raise IntegrityError(
                f"{state.part.name} is not {state.total} bytes long", url=fetch.url
            )
        digest = state.digest() if fetch.checksum or fetch.expected_sha256 else None
        if fetch.expected_sha256 is not None and digest != fetch.expected_sha256.lower():
            state.discard()
            raise IntegrityError(
                f"sha256 mismatch: expected {fetch.expected_sha256.lower()}, got {digest}",
                url=fetch.url,
            )
        os.replace(state.part, fetch.target)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state.meta)
        return digest

    try:
        return await asyncio.shield(asyncio.to_thread(finish))
    except OSError as exc:
        raise WriteError(f"cannot write {fetch.target}: {exc.strerror}", url=fetch.url) from exc


async def _fill(state: _State, segment: _Segment, response: Response | None) -> None:
    """Receive the rest of ``segment`` (from ``response``, or a new Range request)."""
    owned = response is None
    try:
        if response is None:
            response = await _request_range(state, segment)
        await _receive(state, segment, response)
    except Exception as exc:
        if not (is_body_error(exc) or isinstance(exc, OSError)):
            raise
        raise SegmentRetry(f"segment at {segment.start}: {type(exc).__name__}: {exc}") from exc
    finally:
        if response is not None:
            if isinstance(response, Answer):
                response.release()  # kept when read to its end, else closed
            elif owned and segment.complete:
                response.release()  # the range was read to its end: keep the connection
            else:
                response.close()  # the first answer goes on with the whole file: stop it


def helper_spec(state: _State, segment: _Segment) -> dict[str, Any]:
    """What a helper process needs to fill ``segment`` (plain values: it is pickled)."""
    fetch = state.fetch
    assert state.fd is not None
    info = os.fstat(state.fd)
    return {
        "url": state.url,
        "origin": fetch.url,
        "part": os.path.abspath(state.part),
        # The .part's identity: a helper writes only into this very file.
        "inode": (info.st_dev, info.st_ino),
        "headers": dict(fetch.headers),
        "timeout": fetch.sessions.seconds,
        "total": state.total,
        "etag": state.etag,
        "last_modified": state.last_modified,
        "segment": (segment.start, segment.end, segment.done),
    }


async def _delegated(state: _State, segment: _Segment, helpers: SegmentHelpers) -> None:
    """Have another process fill ``segment``; redo here what it hands back undone."""
    fetch = state.fetch

    def on_done(done: int) -> None:
        done = min(done, segment.end - segment.start)
        if done > segment.done:  # written by the helper: now it may be recorded
            fetch.emit(DownloadProgress(fetch.url, done - segment.done))
            segment.done = done
            _save_if_due(state)

    outcome = await helpers.fill(helper_spec(state, segment), on_done)
    if outcome is None and segment.complete:
        return
    kind, message = outcome or ("retry", "ended early")
    if kind in ("restart", "changed"):
        raise SegmentRestart(message, split_off=kind == "restart")
    if kind == "write":
        raise WriteError(message, url=fetch.url)
    await _fill(state, segment, None)  # a helper that failed or died: this process does it


async def _request_range(state: _State, segment: _Segment) -> Response:
    fetch = state.fetch
    first = segment.start + segment.done
    headers = dict(fetch.headers)
    headers["Accept-Encoding"] = "identity"
    headers["Range"] = f"bytes={first}-{segment.end - 1}"
    validator = _validator(state.etag, state.last_modified)
    if validator:
        headers["If-Range"] = validator
    sessions = fetch.sessions
    wire = sessions.wire_for(state.url)
    response: Response
    if wire is not None:
        seconds = sessions.seconds
        response = await wire.get(state.url, headers, connect_timeout=seconds, read_timeout=seconds)
    else:
        response = await sessions.get().get(
            state.url,
            headers=headers,
            allow_redirects=False,
            auto_decompress=False,
            timeout=sessions.timeout,
        )
    problem = _check_206(state, response, first)
    if problem is not None:
        response.release()
        raise problem
    return response


def _check_206(state: _State, response: Response, first: int) -> BaseException | None:
    status = response.status
    if status == 200:
        return SegmentRestart("the server ignored the Range or the file changed", split_off=True)
    if status >= 500 or status in (408, 429):
        return SegmentRetry(f"HTTP {status} for a segment")
    if status != 206:
        return SegmentRestart(f"HTTP {status} for a segment", split_off=True)
    got_first, got_total = _content_range(response.headers.get("Content-Range"))
    if got_first != first or got_total != state.total:
        return SegmentRestart(
            f"the server sent bytes from {got_first} of {got_total} "
            f"when {first} of {state.total} was asked for",
            split_off=True,
        )
    for name, known in (("ETag", state.etag), ("Last-Modified", state.last_modified)):
        value = response.headers.get(name)
        if known and value and value != known:
            return SegmentRestart(f"the file changed ({name})", split_off=False)
    return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    unit, _, rest = (value or "").strip().partition(" ")
    span, _, total = rest.partition("/")
    first, _, _ = span.partition("-")
    if unit.lower() != "bytes" or not first.strip().isdigit() or not total.strip().isdigit():
        return None, None
    return int(first), int(total)


async def _receive(state: _State, segment: _Segment, response: Response) -> None:
    if isinstance(response, Answer) and await _receive_in_thread(state, segment, response):
        if not segment.complete:
            raise SegmentRetry(f"segment at {segment.start} ended early")
        return
    emit = state.fetch.emit
    url = state.fetch.url
    segment.next_offset = segment.start + segment.done
    left = segment.end - segment.next_offset
    loop = asyncio.get_running_loop()
    try:
        async for chunk in _pieces(response):
            if len(chunk) > left:
                chunk = chunk[:left]
            if not segment.chunks and segment.timer is None:
                # Received bytes reach the .part within FLUSH_AGE, however slow.
                segment.timer = loop.call_later(FLUSH_AGE, _on_age, state, segment)
            segment.chunks.append(chunk)
            segment.gathered += len(chunk)
            left -= len(chunk)
            emit(DownloadProgress(url, len(chunk)))
            if segment.gathered >= SEGMENT_FLUSH_BYTES or left == 0:
                await _wait(state, segment)
                _submit(state, segment)
            if left == 0:
                break
        if segment.chunks:
            await _wait(state, segment)
            _submit(state, segment)
        await _wait(state, segment)
    finally:
        if segment.timer is not None:
            segment.timer.cancel()
            segment.timer = None
    if not segment.complete:
        raise SegmentRetry(f"segment at {segment.start} ended early")


async def _receive_in_thread(state: _State, segment: _Segment, answer: Answer) -> bool:
    """A large segment received by a thread of its own (see ``Answer.detach_body``).

    False: not taken (too small, the budget is spent, or the answer cannot
    be detached); nothing was read. The thread writes each read at its
    offset before the next read and only then counts it in ``segment.done``,
    which the loop records in the sidecar as before.
    """
    budget = state.fetch.receivers
    left = segment.end - segment.start - segment.done
    if budget is None or segment.chunks or state.fd is None:
        return False
    if not budget.take(min(left, answer.body_left())):
        return False
    try:
        body = answer.detach_body()
        if body is None:
            return False
        await _wait(state, segment)  # nothing of this segment may be in flight
        await _thread_fill(state, segment, body)
    finally:
        budget.give()
    return True


async def _thread_fill(state: _State, segment: _Segment, body: DetachedBody) -> None:
    fd = state.fd
    assert fd is not None
    fetch = state.fetch

    def job() -> None:
        offset = segment.start + segment.done
        view = memoryview(bytearray(RECEIVE_BUFFER))
        pieces = iter(body.queued)
        while (room := segment.end - offset) > 0:
            piece = next(pieces, None)
            if piece is None:
                n = body.read_into(view[: min(len(view), room)])
                if n == 0:
                    return  # the answer ended: the caller sees the segment short
                piece = view[:n]
            piece = memoryview(piece)[:room]
            try:
                while piece:
                    written = os.pwrite(fd, piece, offset)
                    piece, offset = piece[written:], offset + written
                    segment.done += written
            except OSError as exc:
                msg = f"cannot write {state.part}: {exc.strerror or exc}"
                raise WriteError(msg, url=fetch.url) from exc

    def hold(receiver: Receiver | None) -> None:
        segment.pending, segment.stop = receiver, body.stop if receiver is not None else None

    def progress(n: int) -> None:
        fetch.emit(DownloadProgress(fetch.url, n))

    await run_receiver(job, lambda: segment.done, progress, hold, lambda: _save_if_due(state))
    segment.next_offset = segment.start + segment.done


async def _pieces(response: Response) -> AsyncIterator[bytes | memoryview]:
    """The body as received, from either path."""
    if isinstance(response, Answer):
        async for piece in response.pieces():
            yield piece
        return
    # iter_chunks, not iter_any: each piece as received (iter_any joins what
    # is buffered into a new bytes, a copy of every byte).
    async for chunk, _ in response.content.iter_chunks():
        if chunk:  # b"": the end of a chunk of a chunked body
            yield chunk


async def _wait(state: _State, segment: _Segment) -> None:
    """Until the segment's write in flight is on disk."""
    future, segment.future = segment.future, None
    if future is None:
        return
    try:
        await asyncio.shield(future)  # a cancel must not drop a write half done
    except OSError as exc:
        raise WriteError(
            f"cannot write {state.part}: {exc.strerror or exc}", url=state.fetch.url
        ) from exc
    segment.pending = None


def _on_age(state: _State, segment: _Segment) -> None:
    """The oldest gathered byte of ``segment`` is FLUSH_AGE old: write what is gathered."""
    segment.timer = None
    if not segment.chunks or state.fd is None:
        return
    future = segment.future
    if future is not None and not future.done():
        loop = asyncio.get_running_loop()
        segment.timer = loop.call_later(FLUSH_AGE / 10, _on_age, state, segment)
        return
    if future is not None:
        if future.cancelled() or future.exception() is not None:
            return  # the next _wait raises it
        segment.future = None
        segment.pending = None
    _submit(state, segment)


def _submit(state: _State, segment: _Segment) -> None:
    """Hand the gathered chunks to a thread, not waiting: the next batch is gathered meanwhile.

    The caller made sure no write of this segment is in flight (one at a
    time keeps each segment's bytes in order and ``done`` exact).
    ``segment.pending`` lets the synchronous cleanup wait for it.
    """
    if segment.timer is not None:
        segment.timer.cancel()
        segment.timer = None
    chunks, offset = segment.chunks, segment.next_offset
    segment.next_offset += segment.gathered
    segment.chunks, segment.gathered = [], 0
    done = threading.Event()

    def job() -> None:
        try:
            state.write(segment, chunks, offset)
        finally:
            done.set()

    segment.pending = done
    future = asyncio.get_running_loop().run_in_executor(None, job)
    future.add_done_callback(lambda f: _written(state, f))
    segment.future = future


def _written(state: _State, future: asyncio.Future[None]) -> None:
    """On the loop, after a write: record progress in the sidecar when it is due."""
    if future.cancelled() or future.exception() is not None or state.fd is None:
        return
    _save_if_due(state)


def _save_if_due(state: _State) -> None:
    if state.report is not None:
        for s in state.segments:
            if s.done != s.saved:
                s.saved = s.done
                state.report(s)
        return
    if (
        any(s.done - s.saved >= SAVE_EVERY for s in state.segments)
        or time.monotonic() - state.saved_at >= SAVE_SECONDS
    ):
        with contextlib.suppress(OSError):  # the next save, or the final one, tells
            state.save()
