"""Files: data goes to ``NAME.part`` and becomes ``NAME`` only when complete.

Why not one aiofiles call per chunk: aiofiles hops to a worker thread for
every call, and at 64 KiB chunks that hop costs more than the write (measured
for the download benchmark: ~30% of plain-write throughput). Here the event
loop only gathers chunks; a worker thread writes them in batches of
:data:`FLUSH_BYTES` with one ``os.writev`` and feeds the sha256 in the same
hop (hashlib releases the GIL, so hashing overlaps the network on another
core). At most one batch is in flight while the next is gathered, so memory
per download stays under ``2 * FLUSH_BYTES`` whatever the file size. A file
that fits in one batch is opened, written, closed and renamed in a single
hop.

Cleanup is synchronous (:meth:`PartFile.keep`, :meth:`PartFile.discard`) so it
is safe in ``finally`` blocks of a cancelled task: it waits for the one batch
in flight, writes what was gathered, and closes the descriptor.

A large body on asyncconc's own connections skips the batches:
:meth:`PartFile.receive` gives it a thread of its own that reads the socket
into one reused buffer and writes each read at once (see
:class:`~asyncconc.downloader._http1.DetachedBody`). What reached the file is
then always a consistent prefix, exactly as with the batches.

A ``NAME.part.meta`` sidecar remembers the URL and the server's validator
(ETag or Last-Modified) so a later run can resume with ``If-Range``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from asyncconc._errors import IntegrityError, WriteError
from asyncconc.downloader._naming import META_SUFFIX, PART_SUFFIX

__all__ = [
    "FLUSH_BYTES",
    "PartFile",
    "ReceiveBudget",
    "Receiver",
    "ResumeInfo",
    "Waiter",
    "create_file",
    "read_resume_info",
    "run_receiver",
]

T = TypeVar("T")
# A received piece: bytes from aiohttp, a view of a connection's buffer from
# _http1 (never rewritten while referenced, so it may be kept until written).
Chunk = bytes | memoryview
FLUSH_BYTES = 1 << 20
# Received data is handed to the disk at the latest this many seconds after
# it arrived, however slowly the file comes in: a crash or SIGKILL loses at
# most about this much time of a download (see PartFile._on_age).
FLUSH_AGE = 1.0
# Files up to this size are written on the loop itself (see commit()).
INLINE_BYTES = 64 << 10
# receive(): the thread's buffer, and how often the loop hears of progress.
RECEIVE_BUFFER = 256 << 10
RECEIVE_TICK = 0.25
# A body with at least this much still to come may be received by a thread.
THREAD_BODY_BYTES = 4 << 20
RECEIVERS_PER_CORE = 2
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ_CHUNK = 1 << 20
# Creates of one name raced by something else that keeps re-creating it.
_CREATE_TRIES = 3


def _iov_max() -> int:
    try:
        limit = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        return 16  # the POSIX minimum
    return limit if limit > 0 else 1024


_IOV_MAX = _iov_max()


@dataclass(frozen=True, slots=True)
class ResumeInfo:
    """What a ``.part`` file holds and where it came from."""

    size: int
    url: str | None
    etag: str | None
    last_modified: str | None
    # The sidecar of a segmented (--split) .part: that .part has holes, so
    # only the segmented path may resume it (see _segmented).
    segmented: dict[str, Any] | None = None

    @property
    def validator(self) -> str | None:
        """The value for ``If-Range``: a strong ETag, else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


def part_path(final: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(final) + PART_SUFFIX)


def meta_path(final: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(final) + META_SUFFIX)


def read_resume_info(final: str | os.PathLike[str]) -> ResumeInfo | None:
    """The state of ``final``'s ``.part`` file, or ``None`` if there is none."""
    final = os.fspath(final)
    try:
        size = os.lstat(final + PART_SUFFIX).st_size
    except FileNotFoundError:
        return None
    loaded: object = None
    meta_file = final + META_SUFFIX
    with contextlib.suppress(OSError, ValueError), open(meta_file, encoding="utf-8") as fh:
        loaded = json.loads(fh.read())
    meta: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    return ResumeInfo(
        size=size,
        url=meta.get("url"),
        etag=meta.get("etag"),
        last_modified=meta.get("last_modified"),
        segmented=meta if "segments" in meta else None,
    )


class PartFile:
    """One download's ``.part`` file, filled in order and committed once.

    Life cycle: ``start()`` (fresh or appending), any number of ``write()``,
    then exactly one of ``commit()`` (rename to the final name),
    ``keep()`` (leave the ``.part`` for a resume) or ``discard()``.
    """

    def __init__(
        self,
        final: str | os.PathLike[str],
        *,
        url: str,
        etag: str | None,
        last_modified: str | None,
        remember: bool = True,
        checksum: bool = True,
    ) -> None:
        # Plain strings: these paths are used many times per file, and
        # pathlib rebuilds its string form on every os call.
        self.final = os.fspath(final)
        self.part = self.final + PART_SUFFIX
        self.meta = self.final + META_SUFFIX
        # The sidecar's content, serialised only when a sidecar is written
        # (a file that arrives whole never gets one).
        self._sidecar: dict[str, str | None] | None = (
            {"url": url, "etag": etag, "last_modified": last_modified} if remember else None
        )
        self._fd: int | None = None
        self._offset = 0
        self._append = False
        self._chunks: list[Chunk] = []
        self._buffered = 0
        self._written = 0
        # sha256 is about a quarter of the CPU of a large download: computed
        # only when someone asked for it (a report, a sha256= to verify).
        self._hash = hashlib.sha256() if checksum else None
        self._pending: Waiter | None = None
        self._in_flight: asyncio.Future[None] | None = None
        self._closed = False
        # True once the .part was renamed to the final name: a commit whose
        # awaiting task was cancelled may still complete in its thread, and
        # after keep() this says whether it did.
        self.committed = False
        self.digest: str | None = None
        # (size, mtime_ns) of the committed file, read before its descriptor
        # was closed: the index records it without another stat.
        self.stat: tuple[int, int] | None = None
        self._age_timer: asyncio.TimerHandle | None = None
        # Set while receive() runs: what makes its thread stop.
        self._stop: Callable[[], None] | None = None
        # What the caller knows was not there (see expect_new).
        self._stale_sidecar = True
        self._part_new = False
        # create_early(): the .part is made before its data is known, and
        # the sidecar (or the removal of a stale one) waits for the first
        # write, when the server's validators are known.
        self._sidecar_due = False

    @property
    def size(self) -> int:
        """Bytes of the file so far, counting what is buffered or in flight."""
        return self._offset + self._written + self._buffered

    def create_early(self) -> None:
        """Create the empty ``.part`` now, for a download that starts afresh.

        Called just after its request went out: creating a file costs tens
        of microseconds of kernel time on ext4 (up to ~1 ms on an ext4
        without a journal just after thousands of deletions), and done now it
        overlaps the server's answer instead of delaying the next request
        once the answer is in. On the caller's thread: a hop to a worker thread per
        file cost more than the create on tmpfs (0.72x the files/s). The
        ``.part`` then exists before its validators are known:
        :meth:`set_validators` gives them and the sidecar is written with
        the first data. A failure is left for the first write to meet and
        report; a download that does not go ahead calls :meth:`discard`.
        """
        if self._fd is not None or self._closed:
            return
        try:
            self._fd = create_file(self.part, replace=not self._part_new)
        except OSError:
            return
        self._sidecar_due = True

    @property
    def created_early(self) -> bool:
        """An empty ``.part`` made by :meth:`create_early`, nothing written yet."""
        return self._sidecar_due

    def expect_new(self, *, part: bool, sidecar: bool) -> None:
        """The caller knows ``.part`` (``part``) or ``.part.meta`` (``sidecar``) is not there.

        A whole file then skips removing a stale sidecar, and a ``.part``
        found at create time is not replaced but refused (``FileExistsError``:
        another program made it during the run and may be writing it).
        """
        self._part_new = part
        self._stale_sidecar = not sidecar

    def set_validators(self, etag: str | None, last_modified: str | None) -> None:
        """The server's ETag and Last-Modified, before the first :meth:`write`."""
        if self._sidecar is not None:
            self._sidecar["etag"] = etag
            self._sidecar["last_modified"] = last_modified

    async def start(self, offset: int) -> None:
        """Prepare to append at ``offset`` (0: start afresh, truncating).

        When appending, the existing bytes are hashed first so the final
        sha256 covers the whole file.
        """
        self._offset = offset
        self._append = offset > 0
        if self._append:
            await self._run(self._open_append)

    async def write(self, chunk: Chunk) -> None:
        """Queue ``chunk``; waits only when a full batch must go to disk.

        Whatever is queued goes to disk when it makes a full batch, or
        :data:`FLUSH_AGE` seconds after the first of it arrived, whichever
        comes first (a timer on the loop, armed once per batch: a file that
        completes within that second still takes the one-hop fast path).
        """
        if not self._chunks and self._age_timer is None:
            self._age_timer = asyncio.get_running_loop().call_later(FLUSH_AGE, self._on_age)
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= FLUSH_BYTES:
            await self._flush()

    def _on_age(self) -> None:
        """The oldest queued byte is FLUSH_AGE old: start writing the batch.

        A timer callback cannot await, so when a batch is still being
        written it looks again shortly; otherwise it hands the queued chunks
        to the writer thread exactly as ``_flush`` does (the job is awaited
        by the next flush, commit or keep).
        """
        self._age_timer = None
        if self._closed or not self._chunks:
            return
        in_flight = self._in_flight
        if in_flight is not None and not in_flight.done():
            self._age_timer = asyncio.get_running_loop().call_later(FLUSH_AGE / 10, self._on_age)
            return
        if in_flight is not None and (in_flight.cancelled() or in_flight.exception()):
            return  # the write error is raised by the next await on it
        chunks = self._take()
        self._in_flight = self._submit(lambda: self._write_chunks(chunks))

    async def commit(self, *, expected_size: int | None, expected_sha256: str | None) -> str | None:
        """Write the rest, check it, rename ``.part`` to the final name.

        Returns the sha256 hex digest (``None`` without ``checksum``).
        Raises :class:`IntegrityError` (the ``.part`` is deleted) when the
        size or the sha256 does not match.
        """
        if self._written == 0 and not self._append:
            # Nothing was handed to a thread yet (so no job can be opening
            # the file right now): the whole file is in memory. It is opened
            # (unless created early), written and renamed at once: nothing
            # to resume, no sidecar.
            self._sidecar = None
            chunks = self._take()
            whole = functools.partial(self._write_whole, chunks, expected_size, expected_sha256)
            if self._written <= INLINE_BYTES:
                # A small file is cheaper on the loop than the futures,
                # wake-ups and GIL hand-offs of a hop to a thread: every
                # small file through the executor measured 0.78x the files/s
                # on 20,000 x 16 KiB on ext4 (docs/benchmarks-download.md,
                # issue 8, seventh session).
                try:
                    return whole()
                except OSError as exc:
                    msg = f"cannot write {self.part}: {exc.strerror or exc}"
                    raise WriteError(msg, url="") from exc
            return await self._run(whole)
        await self._flush()
        await self._wait_pending()
        return await self._run(lambda: self._finish(expected_size, expected_sha256))

    async def receive(
        self,
        read_into: Callable[[memoryview], int],
        stop: Callable[[], None],
        progress: Callable[[int], None],
    ) -> None:
        """Append the bytes that ``read_into`` reads, in a thread of its own.

        ``read_into(buffer)`` (called in that thread) fills the start of
        ``buffer`` and returns how many bytes, 0 at the end of the data, or
        raises what ended the data early; that exception is raised here.
        Each read is written (and hashed) before the next, so the file is
        always a prefix of the data.
        ``progress(n)`` is called on the loop every :data:`RECEIVE_TICK`
        seconds with the bytes written since. ``stop()`` (called on the loop
        by :meth:`keep` or :meth:`discard` if the awaiting task is
        cancelled) must make a waiting ``read_into`` return or raise soon.
        """
        await self._flush()
        await self._wait_pending()

        def hold(receiver: Receiver | None) -> None:
            self._pending, self._stop = receiver, stop if receiver is not None else None

        await run_receiver(lambda: self._receive(read_into), lambda: self._written, progress, hold)

    def _receive(self, read_into: Callable[[memoryview], int]) -> None:
        try:
            if self._fd is None:
                self._fd = self._open_fresh()
            elif self._sidecar_due:
                self._write_sidecar()
        except OSError as exc:
            raise self._write_error(exc) from exc
        fd, hashing = self._fd, self._hash
        view = memoryview(bytearray(RECEIVE_BUFFER))
        while n := read_into(view):
            piece = view[:n]
            if hashing is not None:
                hashing.update(piece)
            try:
                while piece:
                    piece = piece[os.write(fd, piece) :]
            except OSError as exc:
                raise self._write_error(exc) from exc
            self._written += n

    def _write_error(self, exc: OSError) -> WriteError:
        return WriteError(f"cannot write {self.part}: {exc.strerror or exc}", url="")

    def keep(self) -> None:
        """Save what was received to ``.part`` and close; safe when cancelled."""
        if self._closed:
            return
        self._closed = True
        self._stop_receiving()
        try:
            self._wait_pending_sync()
            if self._chunks:
                chunks = self._take()
                self._write_chunks(chunks)
            elif self._sidecar_due:
                # Created early, and no byte came: nothing to resume.
                self._remove_files()
        except OSError:
            pass  # what reached the disk stays a consistent prefix
        finally:
            self._close_fd()

    def discard(self) -> None:
        """Close and delete ``.part`` and its sidecar; safe when cancelled."""
        self._stop_receiving()
        with contextlib.suppress(BaseException):
            self._wait_pending_sync()
        self._remove_files()

    def _remove_files(self) -> None:
        self._cancel_age_timer()
        self._chunks, self._buffered = [], 0
        self._closed = True
        self._close_fd()
        for path in (self.part, self.meta):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _stop_receiving(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def _cancel_age_timer(self) -> None:
        timer, self._age_timer = self._age_timer, None
        if timer is not None:
            timer.cancel()

    def _take(self) -> list[Chunk]:
        """Hand the gathered chunks over for writing (they count as written)."""
        self._cancel_age_timer()
        chunks, self._chunks = self._chunks, []
        self._written += self._buffered
        self._buffered = 0
        return chunks

    # -- worker-thread side -------------------------------------------------
    #
    # Every job goes through _submit, and at most one is in flight: the sync
    # cleanup paths wait for it on a threading.Event (an asyncio future
    # cannot be waited for from a finally block of a cancelled task, and the
    # thread goes on writing whatever happened to the task).

    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        done = threading.Event()

        def job() -> T:
            try:
                return fn()
            finally:
                done.set()

        future = asyncio.get_running_loop().run_in_executor(None, job)
        # Callers await this through asyncio.shield(): cancelling the awaiting
        # task must not cancel the job, since a job still queued behind busy
        # worker threads would then never run nor set ``done``, and keep()
        # would wait for it forever. Its outcome is always retrieved.
        future.add_done_callback(_retrieve)
        # Only a job that was really handed to a thread may be waited for:
        # were the executor refusing work, keep() must not wait forever.
        self._pending = done
        return future

    async def _run(self, fn: Callable[[], T]) -> T:
        await self._wait_pending()
        try:
            return await asyncio.shield(self._submit(fn))
        except OSError as exc:
            raise WriteError(f"cannot write {self.part}: {exc.strerror or exc}", url="") from exc

    async def _flush(self) -> None:
        if not self._chunks:
            return
        await self._wait_pending()
        chunks = self._take()
        # Not awaited here: the next batch is gathered meanwhile.
        self._in_flight = self._submit(lambda: self._write_chunks(chunks))

    async def _wait_pending(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            try:
                await asyncio.shield(in_flight)
            except OSError as exc:
                raise WriteError(f"cannot write {self.part}: {exc.strerror}", url="") from exc

    def _wait_pending_sync(self) -> None:
        pending, self._pending = self._pending, None
        self._in_flight = None
        if pending is not None:
            pending.wait()

    def _open_fresh(self) -> int:
        fd = create_file(self.part, replace=not self._part_new)
        try:
            self._write_sidecar()
        except OSError:
            os.close(fd)
            raise
        return fd

    def _write_sidecar(self) -> None:
        self._sidecar_due = False
        if self._sidecar is None:
            # No sidecar for this file: one left by an earlier run must not
            # describe it (one failing unlink, unless none can be there).
            if self._stale_sidecar:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.meta)
            return
        with open(create_file(self.meta), "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self._sidecar))

    def _open_append(self) -> None:
        # Hash what is already there so the final sha256 covers the file.
        if self._hash is None:
            have = os.stat(self.part).st_size
        else:
            with open(self.part, "rb") as fh:
                have = 0
                while block := fh.read(_READ_CHUNK):
                    self._hash.update(block)
                    have += len(block)
        if have != self._offset:
            raise OSError(f"{self.part} changed size while resuming")
        self._fd = os.open(self.part, _OPEN_FLAGS | os.O_APPEND)

    def _write_chunks(self, chunks: list[Chunk]) -> None:
        if self._fd is None:
            self._fd = self._open_fresh()
        elif self._sidecar_due:
            self._write_sidecar()
        if self._hash is not None:
            for chunk in chunks:
                self._hash.update(chunk)
        # writev() takes at most IOV_MAX buffers (EINVAL beyond): a slow
        # server dribbling small pieces fills a batch with thousands.
        for first in range(0, len(chunks), _IOV_MAX):
            group = chunks[first : first + _IOV_MAX]
            total = sum(map(len, group))
            done = 0
            while done < total:
                n = os.writev(self._fd, group)
                done += n
                if done < total:  # short write: drop what went out and go on
                    group = _drop_prefix(group, n)

    def _write_whole(
        self, chunks: list[Chunk], expected_size: int | None, expected_sha256: str | None
    ) -> str | None:
        self._write_chunks(chunks)
        return self._finish(expected_size, expected_sha256)

    def _finish(self, expected_size: int | None, expected_sha256: str | None) -> str | None:
        if self._fd is not None:
            # A rename keeps size and mtime: this is the final file's stat.
            st = os.fstat(self._fd)
            self.stat = (st.st_size, st.st_mtime_ns)
        self._close_fd()
        digest = self._hash.hexdigest() if self._hash is not None else None
        if expected_sha256 is not None and digest is None:
            raise ValueError("a sha256 to verify needs a PartFile with checksum=True")
        size = self.size
        if expected_size is not None and size != expected_size:
            self._remove_files()
            raise IntegrityError(f"received {size} bytes, server announced {expected_size}", url="")
        if expected_sha256 is not None and digest != expected_sha256.lower():
            self._remove_files()
            raise IntegrityError(
                f"sha256 mismatch: expected {expected_sha256.lower()}, got {digest}", url=""
            )
        os.replace(self.part, self.final)
        self.committed = True
        self.digest = digest
        if self._sidecar is not None or self._append:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.meta)
        self._closed = True
        return digest

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def create_file(path: str, *, replace: bool = True) -> int:
    """A new file at ``path``, never opened through what was there before.

    ``O_EXCL`` first, as nearly every name is new: an existing entry (a
    stale ``.part``, or a symlink planted to redirect the write outside the
    folder, which ``O_NOFOLLOW`` alone would only turn into a failure) is
    removed and the create retried; a missing parent folder is made. Two
    system calls in the usual case, against five for unlink-then-create.
    ``replace=False``: an existing entry is an error, left as it is.
    """
    for _ in range(_CREATE_TRIES):
        try:
            return os.open(path, _OPEN_FLAGS | os.O_EXCL, 0o644)
        except FileExistsError:
            if not replace:
                raise FileExistsError(
                    errno.EEXIST, "made by another program during this run", path
                ) from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
    return os.open(path, _OPEN_FLAGS | os.O_EXCL, 0o644)


class ReceiveBudget:
    """How many bodies may be received by threads of their own at once (one per run, per process).

    :data:`RECEIVERS_PER_CORE` per core: more threads than that only wait on
    each other for the GIL; the bodies beyond stay on the loop.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = RECEIVERS_PER_CORE * (os.cpu_count() or 1) if limit is None else limit
        self.running = 0

    def take(self, size: int) -> bool:
        """One more thread for a body of ``size`` bytes still to come, if worth it and allowed."""
        if size < THREAD_BODY_BYTES or self.running >= self.limit:
            return False
        self.running += 1
        return True

    def give(self) -> None:
        self.running -= 1


class Waiter(Protocol):
    """What cleanup that cannot await waits on: a job's Event, or a :class:`Receiver`."""

    def wait(self, timeout: float | None = None) -> bool: ...


class Receiver:
    """A receive thread (see :func:`run_receiver`); :meth:`wait` returns once it has ended."""

    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _start_receiver(job: Callable[[], None]) -> tuple[asyncio.Future[None], Receiver]:
    """Run ``job`` in a new thread named ``asyncconc-receive``.

    Returns its outcome as a future of the running loop (settled from the
    thread; retrieved even if nobody awaits it) and the thread, for cleanup
    that cannot await: once :meth:`Receiver.wait` returns, the thread is gone.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    future.add_done_callback(_retrieve)

    def run() -> None:
        error: BaseException | None = None
        try:
            job()
        except BaseException as exc:  # handed to the loop, raised there
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(_settle, future, error)

    thread = threading.Thread(target=run, name="asyncconc-receive", daemon=True)
    thread.start()
    return future, Receiver(thread)


async def run_receiver(
    job: Callable[[], None],
    written: Callable[[], int],
    progress: Callable[[int], None],
    hold: Callable[[Receiver | None], None],
    each_tick: Callable[[], None] | None = None,
) -> None:
    """Run ``job`` in a receive thread and follow it until it ends; raises what it raised.

    ``written()`` (read on the loop) counts what the job wrote so far;
    ``progress(n)`` hears every :data:`RECEIVE_TICK` seconds what it grew by
    (then ``each_tick()``), and once more at the end, also when the waiting
    task is cancelled. ``hold(receiver)`` gets the thread while it runs (for
    cleanup that cannot await: it must stop and wait for it), and
    ``hold(None)`` once it has ended and was joined.
    """
    reported = written()  # before the thread adds to it
    future, receiver = _start_receiver(job)
    hold(receiver)
    try:
        while not future.done():
            await asyncio.wait([future], timeout=RECEIVE_TICK)
            now = written()
            if now > reported:
                progress(now - reported)
                reported = now
                if each_tick is not None:
                    each_tick()
        future.result()
    finally:
        if future.done():
            receiver.wait()  # settled as its last act: it ends at once
            hold(None)
        now = written()
        if now > reported:  # also when cancelled: what is on disk so far
            progress(now - reported)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a job's outcome as seen (its awaiting task may have been cancelled)."""
    if not future.cancelled():
        future.exception()


def _drop_prefix(chunks: list[Chunk], n: int) -> list[Chunk]:
    out: list[Chunk] = []
    for chunk in chunks:
        if n >= len(chunk):
            n -= len(chunk)
            continue
        out.append(chunk[n:])
        n = 0
    return out
