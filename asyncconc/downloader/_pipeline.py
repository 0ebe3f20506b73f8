"""The downloader: many URLs at once on one event loop.

:class:`Downloader` reaches servers through :class:`~._sessions.Sessions`
(its own connections for plain ``http://``, an aiohttp session made on
first use for the rest, or the caller's session for everything) and runs
up to ``concurrency`` downloads at a time. The one-shot
:func:`~asyncconc.download` lives in :mod:`._download`, above this module and
:mod:`._sharded` (which imports this one), so the two form no cycle.

A run is ``concurrency`` long-lived worker tasks taking lines in turn from
the one iterator, not a task per URL: a download that ends costs no task
creation and no :func:`asyncio.wait` over everything in flight (a waiter
and a callback per running task, per completion), and several downloads
that end in one loop iteration are handed over at once.

Why not a TaskGroup: :meth:`Downloader.stream` is an async generator, and a
TaskGroup open across a ``yield`` would cancel the *consumer's* task when a
child fails, at whatever point the consumer happens to be. Here every task
is created, awaited and, on exit (break, error, cancellation), cancelled
and awaited inside the generator, so nothing outlives it. Per-URL failures
are results; a bug in a task propagates.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import os
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypedDict

from asyncconc._errors import ClosedError
from asyncconc.downloader._fetching import FetchContext, RetryPolicy, fetch
from asyncconc.downloader._index import SavedIndex
from asyncconc.downloader._limits import fd_concurrency
from asyncconc.downloader._models import (
    DownloadEvent,
    DownloadFinished,
    DownloadRequest,
    DownloadResult,
)
from asyncconc.downloader._naming import NameAllocator, NameClaimer, name_max
from asyncconc.downloader._sessions import Sessions

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Downloader", "DownloaderOptions"]

NOT_STARTED_NO_SPACE = "not started (no space left on device)"


UrlLike = str | DownloadRequest


class DownloaderOptions(TypedDict, total=False):
    """The keyword options of :class:`Downloader` besides session and concurrency."""

    per_host: int | None
    retries: int
    timeout: float
    headers: Mapping[str, str] | None
    overwrite: bool
    resume: bool
    on_event: Callable[[DownloadEvent], None] | None
    backoff: float
    backoff_max: float
    retry_after_max: float
    checksum: bool
    update: bool
    split: int


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


def _ignore(event: DownloadEvent) -> None:
    del event


class Downloader:
    """A reusable downloader for services: one session, many runs.

    Use it as an async context manager::

        async with Downloader("downloads", concurrency=8) as dl:
            async for result in dl.stream(urls):
                print(result.status, result.path)

    ``session``: an :class:`aiohttp.ClientSession` of yours to reuse; it is
    never closed here. Without one, a session is created on entry and closed
    on exit. Its ``auto_decompress`` setting does not matter: bytes are
    always saved exactly as served.

    ``on_event`` is called (synchronously, on the loop) with
    :class:`DownloadStarted`, :class:`DownloadProgress` and
    :class:`DownloadFinished` events; keep it cheap.

    ``checksum``: compute every file's sha256 (``DownloadResult.sha256``).
    Turning it off saves about a quarter of the CPU on large files; a
    request that carries a ``sha256`` to verify is hashed regardless.

    ``split``: fetch each file of at least 2 MiB whose server announces
    ``Accept-Ranges: bytes`` over up to ``split`` connections at once (Range
    segments written in place, resumable per segment; see
    :mod:`asyncconc.downloader._segmented`). Ignored with ``per_host``.

    Raises :class:`ValueError` for bad options. Using a downloader that is
    not open (never entered, or closed) raises
    :class:`~asyncconc.ClosedError`.
    """

    def __init__(
        self,
        dest: str | os.PathLike[str] = ".",
        *,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = 16,
        per_host: int | None = None,
        retries: int = 3,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        overwrite: bool = False,
        resume: bool = True,
        on_event: Callable[[DownloadEvent], None] | None = None,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        checksum: bool = True,
        update: bool = False,
        split: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if per_host is not None and per_host < 1:
            raise ValueError(f"per_host must be at least 1, not {per_host}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if split < 1:
            raise ValueError(f"split must be at least 1, not {split}")
        if backoff < 0 or backoff_max < 0 or retry_after_max < 0:
            raise ValueError("backoff, backoff_max and retry_after_max must not be negative")
        self.dest = Path(dest)
        self.concurrency = concurrency
        self.per_host = per_host
        self.headers = dict(headers or {})
        self.overwrite = overwrite
        self.resume = resume
        self.checksum = checksum
        self.update = update
        self.split = split
        self.policy = RetryPolicy(retries, backoff, backoff_max, retry_after_max)
        self.timeout = timeout
        self._on_event = on_event or _ignore
        self._session = session
        self._sessions: Sessions | None = None
        self._state = _State.UNOPENED
        # Every download task of every stream, so that aclose() can stop a
        # stream whose consumer broke out of its loop without closing it.
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise ClosedError("a Downloader can be entered only once")
        # Our own connections for plain http:// and an aiohttp session made
        # on first use, or the caller's session for everything (Sessions).
        self._sessions = Sessions(
            self._session,
            timeout=self.timeout,
            limit=max(100, self.concurrency),
            per_host=self.per_host,
        )
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel what is still running, close the session if it is ours.

        Idempotent. Tasks of a stream left unfinished (a consumer that broke
        out of ``async for`` without closing the stream) are cancelled here,
        keeping their ``.part`` files.
        """
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        sessions, self._sessions = self._sessions, None
        if sessions is not None:
            await sessions.aclose()

    def _context(
        self, names: NameClaimer | None = None, index_bytes: int | None = None
    ) -> FetchContext:
        if self._state is not _State.OPEN or self._sessions is None:
            raise ClosedError("the Downloader is not open (use 'async with Downloader(...)')")
        self.dest.mkdir(parents=True, exist_ok=True)
        return FetchContext(
            sessions=self._sessions,
            dest=self.dest,
            names=names if names is not None else NameAllocator(),
            policy=self.policy,
            headers=self.headers,
            overwrite=self.overwrite,
            resume=self.resume,
            per_host=self.per_host,
            emit=self._on_event,
            checksum=self.checksum,
            name_limit=name_max(self.dest),
            index=SavedIndex.load(self.dest, upto=index_bytes),
            update=self.update,
            split=self.split,
        )

    async def stream(self, urls: Iterable[UrlLike]) -> AsyncGenerator[DownloadResult, None]:
        """Download ``urls``, yielding each result as it completes.

        ``urls`` is consumed lazily: at most ``concurrency`` downloads are in
        flight. Names are given out in input order, so collisions resolve
        the same way on every run. Leaving the loop early or cancelling
        cancels what is in flight and keeps its ``.part`` files.
        """
        async with contextlib.aclosing(self._run(urls)) as items:
            async for _, result in items:
                yield result

    async def download(self, urls: Iterable[UrlLike]) -> list[DownloadResult]:
        """Download ``urls``; the results in input order."""
        results: dict[int, DownloadResult] = {}
        async with contextlib.aclosing(self._run(urls)) as items:
            async for index, result in items:
                results[index] = result
        return [results[i] for i in sorted(results)]

    async def _run(
        self,
        urls: Iterable[UrlLike],
        *,
        names: NameClaimer | None = None,
        leftover: Callable[[int, DownloadResult], None] | None = None,
        index_bytes: int | None = None,
    ) -> AsyncGenerator[tuple[int, DownloadResult], None]:
        """(input index, result) pairs; ``names`` replaces the run's allocator.

        ``index_bytes``: read only that much of the folder's index (its size
        when a sharded run began; see :meth:`SavedIndex.load`).

        ``leftover`` is told, when the run is cut short (cancelled, or the
        consumer stopped), the (index, result) of every download that was in
        flight: finished ones not yielded yet, and interrupted ones as
        :func:`fetch` left them (``ok`` when complete on disk, else
        ``failed`` naming their ``.part``). URLs never started are not told.
        """
        ctx = self._context(names, index_bytes)
        # Running out of descriptors must slow the run down, never fail it.
        limit = fd_concurrency(self.concurrency)
        lines = enumerate(urls)
        finished: collections.deque[tuple[int, DownloadResult]] = collections.deque()
        fetching: dict[int, int] = {}  # worker -> index of the URL it is on
        cut: dict[int, DownloadResult] = {}
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] | None = None  # the consumer, waiting
        room: asyncio.Future[None] | None = None  # workers, waiting for it

        def notify(_: object = None) -> None:
            if wake is not None and not wake.done():
                wake.set_result(None)

        async def worker(slot: int) -> None:
            # Workers take lines in turn from the one iterator, so names are
            # claimed in input order (a claim happens before a download's
            # first suspension) and the list is read only as slots free up.
            nonlocal room
            for index, url in lines:
                request = _as_request(url)
                if ctx.disk_full:
                    # ENOSPC: start nothing new (what is in flight finishes
                    # or keeps its .part); a rerun after freeing space resumes.
                    result = DownloadResult.unfinished(request, NOT_STARTED_NO_SPACE)
                    self._on_event(DownloadFinished(result))
                else:
                    fetching[slot] = index
                    result = await fetch(
                        ctx, request, interrupted=functools.partial(cut.__setitem__, index)
                    )
                    del fetching[slot]
                finished.append((index, result))
                notify()
                while len(finished) >= limit:
                    # A consumer that does not keep up holds the run back.
                    if room is None or room.done():
                        room = loop.create_future()
                    await room

        workers = [asyncio.create_task(worker(slot)) for slot in range(limit)]
        for task in workers:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(notify)
        try:
            while True:
                while finished:
                    if room is not None and not room.done():
                        room.set_result(None)
                    yield finished.popleft()
                for task in workers:
                    if task.done() and (task.cancelled() or task.exception() is not None):
                        task.result()  # a bug in a download (or in urls) propagates
                if all(task.done() for task in workers):
                    break
                wake = loop.create_future()
                await wake
                wake = None
        finally:
            for task in workers:
                task.cancel()
            # Wait for the cancelled downloads so their .part files are saved
            # and their connections released before we return.
            await asyncio.wait(workers)
            if leftover is not None:
                for index, result in finished:
                    leftover(index, result)
                for index in fetching.values():
                    if index in cut:
                        leftover(index, cut[index])
            if ctx.index is not None:
                ctx.index.close()  # the records gathered are written


def _as_request(url: UrlLike) -> DownloadRequest:
    if isinstance(url, DownloadRequest):
        if url.problem is not None or url.checked:
            return url
        # Validate again: a request made with the plain constructor skipped
        # from_url's checks (scheme, a name inside the folder, the sha256).
        name = url.name.as_posix() if url.name is not None else None
        return DownloadRequest.from_url(url.url, name, url.sha256, line=url.line)
    if not isinstance(url, str):
        raise TypeError(f"expected a URL string or DownloadRequest, got {type(url).__name__}")
    return DownloadRequest.from_url(url.strip())
