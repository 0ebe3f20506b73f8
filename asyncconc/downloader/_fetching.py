"""One URL, start to finish: name, skip, resume, retry, redirect, verify.

This is the only module that talks to aiohttp (and to asyncconc's own
receive path for plain ``http://`` GETs, :mod:`._http1`, when the context
has one); their errors are translated here (``raise FetchError(...) from
exc``). Per-URL failures come back as a
failed :class:`DownloadResult`; cancellation propagates, keeping ``.part``.

Retry classes: 5xx, 408, 429 and the network failures that
:mod:`~asyncconc.downloader._failures` marks transient (refused, reset,
timeouts, bodies that end early) are retried with exponential backoff and
jitter, honouring ``Retry-After`` up to a bound; a retry after a partial
body resumes with ``Range``. Any other 4xx, a name that does not resolve and
a TLS failure fail at once. Running out of file descriptors (EMFILE) is
back-pressure: waited for, never counted as an attempt. A full disk
(ENOSPC) fails the download, keeps its ``.part`` and sets
``FetchContext.disk_full`` so the pipeline starts nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import random
import re
import stat as stat_module
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from asyncconc._errors import DownloadError, FetchError, HTTPStatusError, RedirectError, WriteError
from asyncconc.downloader._failures import classify, is_emfile, is_enospc
from asyncconc.downloader._http1 import Answer
from asyncconc.downloader._index import SavedIndex, SavedRecord
from asyncconc.downloader._models import (
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadRequest,
    DownloadResult,
    DownloadStarted,
    Status,
    url_problem,
)
from asyncconc.downloader._naming import META_SUFFIX, PART_SUFFIX, NameClaimer, choose_name
from asyncconc.downloader._sessions import Sessions, is_body_error, is_network_error
from asyncconc.downloader._writing import PartFile, ReceiveBudget, part_path, read_resume_info

if TYPE_CHECKING:
    import aiohttp

__all__ = ["FetchContext", "RetryPolicy", "fetch"]

MAX_REDIRECTS = 10
# Waits for a free file descriptor before EMFILE counts as a failure after all
# (each wait ends when another download finishes, or after a second).
MAX_BACKPRESSURE_WAITS = 600
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_STATUSES = frozenset({408, 429})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
# Credentials are for the host the user named, not for wherever it redirects.
_ORIGIN_BOUND_HEADERS = ("Authorization", "Cookie", "Proxy-Authorization")
_ORIGIN_BOUND_LOWER = frozenset(name.lower() for name in _ORIGIN_BOUND_HEADERS)


def _carries_credentials(session: aiohttp.ClientSession) -> bool:
    """Whether ``session`` adds credentials to every request it makes."""
    return session.auth is not None or any(
        name in session.headers for name in _ORIGIN_BOUND_HEADERS
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried.

    The n-th retry waits ``min(backoff_max, backoff * 2**(n-1))`` scaled by a
    random factor in [0.5, 1] ("equal jitter": retries of many URLs that
    failed together spread out, yet never wait less than half the step). A
    server's ``Retry-After`` raises the wait, capped at ``retry_after_max``.
    """

    retries: int = 3
    backoff: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        # The exponent is capped: 2.0 ** 1024 overflows (--retries 2000).
        step = min(self.backoff_max, self.backoff * 2.0 ** min(retry - 1, 64))
        wait = step * (0.5 + random.random() / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_max))
        return wait


@dataclass(slots=True)
class FetchContext:
    """What every URL of one run shares."""

    sessions: Sessions
    dest: Path
    names: NameClaimer
    policy: RetryPolicy
    headers: Mapping[str, str]
    overwrite: bool
    resume: bool
    per_host: int | None
    emit: Callable[[DownloadEvent], None]
    checksum: bool = True
    name_limit: int = 255
    # What earlier runs saved into dest (None: do not use or keep records).
    index: SavedIndex | None = None
    # Re-check recorded complete files with a conditional request.
    update: bool = False
    split: int = 1  # connections per file (--split); see _segmented
    # Set when a write hit ENOSPC: the pipeline starts no new downloads.
    disk_full: bool = False
    _host_slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    _real_dest: str | None = None
    _ended: asyncio.Event = field(default_factory=asyncio.Event)
    # The names in dest when this run first looked (folded, see _fold);
    # None: not listed yet, or the listing failed (every name is looked up).
    _present: frozenset[str] | None = None
    _listed: bool = False
    # Bodies received by threads of their own (_Job._receive_body, --split).
    receivers: ReceiveBudget = field(default_factory=ReceiveBudget)

    def download_ended(self) -> None:
        """One download released its descriptors: wake those waiting for one."""
        self._ended.set()
        self._ended = asyncio.Event()

    async def wait_for_descriptors(self) -> None:
        """Until another download ends, or one second (it may be the only one)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._ended.wait()

    def absent_at_start(self, path: str) -> bool:
        """True if ``path`` is directly in ``dest`` and had no entry there at the start.

        "The start" is this run's first call: one ``listdir`` of ``dest``,
        before any download of the run created anything. Each name is
        claimed by one download of the run, so a name absent then was not
        made since by this run, except by the download that owns it: a
        download asks only before its first request (``_Job._first_look``).
        That saves the failing ``lstat``/``unlink`` of ``NAME``,
        ``NAME.part`` and ``NAME.part.meta`` of every new file (about a tenth
        of the wall time of 20,000 small files into an empty folder). ``NAME``
        itself may be asked about at any time by the download holding its
        claim: that download makes ``NAME`` only by the rename that ends it,
        and a released name was never written (a download that renames
        drops its early ``.part`` first), so no other download of the run
        makes ``NAME`` while the claim is held. Names
        compare case-folded (NFC first), so a case-insensitive file system's
        ``A.BIN`` makes ``a.bin`` present. Another program creating files in
        ``dest`` during the run: its ``NAME.part`` is refused, not replaced
        nor resumed (``PartFile.expect_new``, ``SegmentedFetch.part_new``:
        the download fails, naming it);
        its ``NAME`` is replaced by the download, as it always was when it
        appeared after the request went out.
        """
        if not self._listed:
            self._listed = True
            try:
                names = os.listdir(self.dest)
            except FileNotFoundError:
                names = []  # made when the first file is written
            except OSError:
                return False  # _present stays None: look every name up
            self._present = frozenset(map(_fold, names))
        present = self._present
        if present is None:
            return False
        folder, _, name = path.rpartition(os.sep)
        return folder == os.fspath(self.dest) and _fold(name) not in present

    def real_dest(self) -> str:
        if self._real_dest is None:
            self._real_dest = os.path.realpath(self.dest)
        return self._real_dest

    def host_slot(self, url: str) -> asyncio.Semaphore | None:
        if self.per_host is None:
            return None
        host = (urlsplit(url).hostname or "").lower()
        slot = self._host_slots.get(host)
        if slot is None:
            slot = self._host_slots[host] = asyncio.Semaphore(self.per_host)
        return slot


def _fold(name: str) -> str:
    """``name`` as a case- and normalisation-insensitive file system compares it."""
    if name.isascii():
        return name.lower()
    return unicodedata.normalize("NFC", name).casefold()


INTERRUPTED = "interrupted before it finished"


async def fetch(
    ctx: FetchContext,
    request: DownloadRequest,
    *,
    interrupted: Callable[[DownloadResult], None] | None = None,
) -> DownloadResult:
    """Download ``request`` into ``ctx.dest``; never raises for a per-URL failure.

    Cancellation propagates; before it does, ``interrupted`` (if given) gets
    what the cancelled download leaves behind: ``ok`` when the file was
    complete and renamed all the same (a commit finishing in its thread),
    else ``failed`` with the ``.part`` kept (``DownloadResult.part``).
    """
    job = _Job(ctx, request)
    try:
        result = await job.run()
    except DownloadError as exc:
        result = job.result("failed", error=str(exc))
    except asyncio.CancelledError:
        if interrupted is not None:
            interrupted(job.interrupted_result())
        raise
    finally:
        ctx.download_ended()
    ctx.emit(DownloadFinished(result))
    return result


class _Transient(Exception):
    """A failure worth retrying (``backpressure``: without counting an attempt)."""

    def __init__(
        self, message: str, retry_after: float | None = None, *, backpressure: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.backpressure = backpressure


class _Reissue(Exception):
    """Ask again at once (the name became known); not counted as an attempt."""


class _Job:
    def __init__(self, ctx: FetchContext, request: DownloadRequest) -> None:
        self.ctx = ctx
        self.request = request
        self.started = time.monotonic()
        self.attempts = 0
        self.rel: PurePosixPath | None = None
        self._target: str | None = None
        self.name_fixed = request.name is not None
        self.note: str | None = None
        self.size = 0
        # Segments per file; dropped to 1 when the server will not do ranges.
        # Not with a per-host limit: every segment is another connection.
        self.split = ctx.split if ctx.per_host is None else 1
        self._part: PartFile | None = None
        # The .part created while the request is out (see _exchange).
        self._early: PartFile | None = None
        # No request sent yet: absent_at_start may answer for this name.
        self._first_look = True
        # NAME.part / NAME.part.meta were free at the start (first attempt).
        self._part_absent = False
        self._meta_absent = False
        # The record of a complete file being re-checked (update=True).
        self.recorded: SavedRecord | None = None

    def result(
        self,
        status: Status,
        *,
        error: str | None = None,
        sha256: str | None = None,
        unchanged: bool | None = None,
    ) -> DownloadResult:
        kept: str | None = None
        if status == "failed" and self.rel is not None:
            # One lstat, on failures only: the report names what a rerun resumes.
            part = part_path(self.target)
            if os.path.lexists(part):
                kept = self.rel.as_posix() + PART_SUFFIX
        return DownloadResult(
            url=self.request.url,
            path=self.rel.as_posix() if self.rel is not None else None,
            status=status,
            bytes=self.size,
            sha256=sha256,
            attempts=self.attempts,
            error=error,
            seconds=round(time.monotonic() - self.started, 6),
            line=self.request.line,
            note=self.note,
            part=kept,
            unchanged=unchanged,
        )

    def interrupted_result(self) -> DownloadResult:
        """How this job stands after a cancel (its ``.part`` already saved)."""
        part = self._part
        if part is not None and part.committed:
            return self.result("ok", sha256=part.digest)
        return self.result("failed", error=INTERRUPTED)

    async def _claim(self, wanted: PurePosixPath, *, first: bool = False) -> None:
        if self.rel is not None:
            self.ctx.names.release(self.rel)
            self.note = None
        self.rel = await self.ctx.names.aclaim(wanted, first=first)
        self._target = None
        if self.rel is not wanted and self.rel != wanted:
            self.note = (
                f"name collision: {wanted.as_posix()!r} is taken by another line, "
                f"stored as {self.rel.as_posix()!r}"
            )

    @property
    def _checksum(self) -> bool:
        return self.ctx.checksum or self.request.sha256 is not None

    @property
    def target(self) -> str:
        """``dest / rel`` as a string, joined once per claimed name.

        A string, not a Path: it is handed to os calls several times per
        file, and a Path rebuilds its string form each time.
        """
        assert self.rel is not None
        if self._target is None:
            self._target = os.path.join(self.ctx.dest, str(self.rel))
        return self._target

    async def run(self) -> DownloadResult:
        request = self.request
        if request.problem is not None:
            return self.result("failed", error=request.problem)
        ctx = self.ctx
        record = None
        if ctx.index is not None and not ctx.overwrite:
            record = ctx.index.get(request.url)
            if record is not None and request.name is not None and record.path != request.name:
                record = None  # the list names another file now
        wanted = request.name or (
            record.path
            if record is not None
            else PurePosixPath(choose_name(request.url, None, limit=ctx.name_limit))
        )
        await self._claim(wanted, first=True)
        if record is not None and self.rel == record.path:
            # Saved complete by an earlier run and unchanged on disk since:
            # known without asking the server.
            self.name_fixed = True
            self.size = record.size
            if not ctx.update:
                return self.result("skipped")
            self.recorded = record
        elif not self.name_fixed:
            await self._avoid_other_urls_files(wanted)
            if not ctx.overwrite and self._target_exists() and (skipped := await self._probe()):
                return skipped
        if skipped := self._skip_if_complete():
            return skipped
        reissues = 0
        waits = 0
        while True:
            self.attempts += 1
            try:
                return await self._attempt()
            except _Reissue:
                self.attempts -= 1
                reissues += 1
                if reissues > 3:
                    raise FetchError(
                        "the server's answers keep changing", url=request.url
                    ) from None
            except _Transient as exc:
                if exc.backpressure and waits < MAX_BACKPRESSURE_WAITS:
                    # Out of file descriptors: not this URL's fault. Wait for
                    # another download to end (or a moment) and go again.
                    self.attempts -= 1
                    waits += 1
                    await self.ctx.wait_for_descriptors()
                    continue
                if self.attempts > self.ctx.policy.retries:
                    tries = f"{self.attempts} attempt{'s' if self.attempts > 1 else ''}"
                    raise FetchError(f"{exc} (gave up after {tries})", url=request.url) from None
                await asyncio.sleep(self.ctx.policy.delay(self.attempts, exc.retry_after))

    async def _avoid_other_urls_files(self, wanted: PurePosixPath) -> None:
        """A name that holds the file saved from another URL is not ours."""
        index = self.ctx.index
        if index is None:
            return
        held: list[PurePosixPath] = []
        while self.rel is not None and len(held) < 100:
            owner = index.owner(self.rel)
            if owner is None or owner == self.request.url:
                break
            held.append(self.rel)
            self.rel = await self.ctx.names.aclaim(wanted)
            self._target = None
        if held:
            for path in held:
                self.ctx.names.release(path)
            assert self.rel is not None
            self.note = (
                f"{wanted.as_posix()!r} holds the file saved from another URL, "
                f"stored as {self.rel.as_posix()!r}"
            )

    async def _probe(self) -> DownloadResult | None:
        """A file of this URL's name exists, with no record: ask HEAD, not GET.

        One request and no body bytes: the server's name (Content-Disposition)
        says whether the existing file is this URL's. Any trouble falls back
        to the GET, which retries properly.
        """
        headers = CIMultiDict(self.ctx.headers)
        headers.setdefault("Accept-Encoding", "identity")
        try:
            response = await self._open(headers, method="HEAD")
        except (_Transient, DownloadError):
            return None
        try:
            if not 200 <= response.status < 300:
                return None
            disposition = response.headers.get("Content-Disposition")
            etag = response.headers.get("ETag")
            last_modified = response.headers.get("Last-Modified")
            length = response.content_length
        finally:
            response.release()
        self.name_fixed = True
        wanted = PurePosixPath(
            choose_name(self.request.url, disposition, limit=self.ctx.name_limit)
        )
        assert self.rel is not None
        if wanted.name != self.rel.name:
            await self._claim(wanted)
            await self._avoid_other_urls_files(wanted)
        skipped = self._skip_if_complete()
        if skipped is not None and self.ctx.index is not None and length in (None, self.size):
            assert self.rel is not None
            self.ctx.index.add(self.request.url, self.rel, etag=etag, last_modified=last_modified)
        return skipped

    def _target_exists(self) -> bool:
        # One lstat on the loop, like _skip_if_complete's (no thread hop);
        # none for a name the folder did not hold at the start.
        if self.ctx.absent_at_start(self.target):
            return False
        return os.path.lexists(self.target)

    def _remember(
        self, etag: str | None, last_modified: str | None, stat: tuple[int, int] | None = None
    ) -> None:
        if self.ctx.index is not None and self.rel is not None:
            self.ctx.index.add(
                self.request.url, self.rel, etag=etag, last_modified=last_modified, stat=stat
            )

    def _skip_if_complete(self) -> DownloadResult | None:
        if not self.name_fixed or self.ctx.overwrite or self.recorded is not None:
            return None
        if self.ctx.absent_at_start(self.target):
            return None  # not there at the start, and only this download makes it
        try:
            stat = os.lstat(self.target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DownloadError(
                f"cannot inspect {self.target}: {exc.strerror}", url=self.request.url
            ) from exc
        if not stat_module.S_ISREG(stat.st_mode) and not os.path.isfile(self.target):
            raise DownloadError(
                f"{self.rel} exists and is not a regular file", url=self.request.url
            )
        self.size = stat.st_size
        return self.result("skipped")

    def _check_inside(self) -> None:
        # Names are sanitised, so only a symlinked sub-folder inside dest can
        # lead out; a plain name sits in dest itself (and a symlink planted
        # as NAME or NAME.part is replaced, never written through).
        assert self.rel is not None
        if len(self.rel.parts) == 1:
            return
        root = self.ctx.real_dest()
        parent = os.path.realpath(os.path.dirname(self.target))
        if os.path.commonpath([root, parent]) != root:
            raise DownloadError(
                f"{self.rel} would be written outside the output folder (through a symlink)",
                url=self.request.url,
            )

    async def _attempt(self) -> DownloadResult:
        if skipped := self._skip_if_complete():
            return skipped
        self._check_inside()
        headers = CIMultiDict(self.ctx.headers)
        headers.setdefault("Accept-Encoding", "identity")
        if self.recorded is not None:
            # update=True: the server says whether the saved file is current.
            if self.recorded.etag:
                headers["If-None-Match"] = self.recorded.etag
            if self.recorded.last_modified:
                headers["If-Modified-Since"] = self.recorded.last_modified
        offset = 0
        # Before the first request, a name the folder did not hold at the
        # start has no .part nor sidecar: nothing to look up.
        first_look, self._first_look = self._first_look, False
        absent = self.ctx.absent_at_start
        self._part_absent = first_look and absent(self.target + PART_SUFFIX)
        self._meta_absent = first_look and absent(self.target + META_SUFFIX)
        info = None
        if self.ctx.resume and not self._part_absent:
            info = read_resume_info(self.target)
        if info is not None and info.segmented is not None:
            resumed = await self._segmented(None, info.segmented)
            assert resumed is not None  # a saved state is always taken up
            return resumed
        if info is not None and info.size > 0 and info.url in (None, self.request.url):
            offset = info.size
            headers["Range"] = f"bytes={offset}-"
            if info.validator:
                headers["If-Range"] = info.validator
        # A fresh start: no .part was there (the resume check looked).
        fresh = info is None and self.ctx.resume and self.split <= 1 and self.recorded is None
        slot = self.ctx.host_slot(self.request.url)
        if slot is not None:
            async with slot:
                return await self._exchange(headers, offset, fresh=fresh)
        return await self._exchange(headers, offset, fresh=fresh)

    async def _exchange(
        self, headers: CIMultiDict[str], offset: int, *, fresh: bool
    ) -> DownloadResult:
        if fresh:
            # Its .part is created once the request is out (see _get).
            self._early = self._new_part(None)
            if self._part_absent:
                self._early.expect_new(part=True, sidecar=self._meta_absent)
        try:
            response = await self._open(headers)
            try:
                return await self._receive(response, offset)
            finally:
                response.release()
        finally:
            self._drop_early()

    def _new_part(self, headers: Mapping[str, str] | None) -> PartFile:
        return PartFile(
            self.target,
            url=self.request.url,
            etag=headers.get("ETag") if headers is not None else None,
            last_modified=headers.get("Last-Modified") if headers is not None else None,
            remember=self.ctx.resume,
            checksum=self._checksum,
        )

    def _drop_early(self) -> None:
        """Remove the early ``.part`` unless a download took it over."""
        early, self._early = self._early, None
        if early is not None and early is not self._part and early.created_early:
            early.discard()

    async def _open(
        self, headers: CIMultiDict[str], *, method: str = "GET"
    ) -> aiohttp.ClientResponse | Answer:
        """GET (or HEAD), following up to 10 redirects by hand (to name loops clearly)."""
        url = self.request.url
        origin: tuple[str, str] | None = None  # the list's URL's, split at a redirect
        foreign = False  # the URL asked for now is of another origin
        seen = {url}
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await self._get(url, headers, foreign=foreign, method=method)
            except Exception as exc:
                if is_network_error(exc):
                    raise self._failure(exc, url) from exc
                if isinstance(exc, ValueError):  # e.g. a header that cannot be sent
                    msg = f"cannot send the request: {exc}"
                    raise FetchError(msg, url=self.request.url) from exc
                raise
            if response.status not in _REDIRECTS:
                return response
            location = response.headers.get("Location")
            response.release()
            if not location:
                raise RedirectError(
                    f"HTTP {response.status} redirect without a Location", url=self.request.url
                )
            url = urljoin(url, location)
            if problem := url_problem(url):
                raise RedirectError(f"redirected to {url!r}: {problem}", url=self.request.url)
            if url in seen:
                raise RedirectError(f"redirect loop at {url}", url=self.request.url)
            seen.add(url)
            if origin is None:
                origin = urlsplit(self.request.url)[:2]
            foreign = urlsplit(url)[:2] != origin
            if foreign:
                for name in _ORIGIN_BOUND_HEADERS:
                    headers.popall(name, None)
        raise RedirectError(f"more than {MAX_REDIRECTS} redirects", url=self.request.url)

    async def _get(
        self, url: str, headers: CIMultiDict[str], *, foreign: bool, method: str = "GET"
    ) -> aiohttp.ClientResponse | Answer:
        sessions = self.ctx.sessions
        wire = sessions.wire_for(url)
        if wire is not None:
            early = self._early
            answer = await wire.get(
                url,
                headers,
                connect_timeout=sessions.seconds,
                read_timeout=sessions.seconds,
                method=method,
                sent=early.create_early if early is not None else None,
            )
            if "Set-Cookie" in answer.headers:
                # Kept as aiohttp keeps them; with cookies in the jar the
                # next requests go through aiohttp, which sends them.
                sessions.keep_cookies(answer.headers, url)
            return answer
        session = sessions.get()
        options: dict[str, Any] = {
            "allow_redirects": False,
            "auto_decompress": False,
            "timeout": sessions.timeout,
        }
        if not (foreign and _carries_credentials(session)):
            return await session.request(method, url, headers=headers, **options)
        # A caller's session may add credentials to every request (default
        # headers, auth) and aiohttp cannot leave them out of one request. So
        # another origin is asked through a bare session on the same
        # connection pool, with the session's other default headers.
        merged = CIMultiDict(
            (k, v) for k, v in session.headers.items() if k.lower() not in _ORIGIN_BOUND_LOWER
        )
        merged.update(headers)
        import aiohttp  # the session above imported it

        bare = aiohttp.ClientSession(connector=session.connector, connector_owner=False)
        try:
            return await bare.request(method, url, headers=merged, **options)
        finally:
            await bare.close()  # the pool stays open: it is the caller's

    async def _receive(
        self, response: aiohttp.ClientResponse | Answer, offset: int
    ) -> DownloadResult:
        status = response.status
        url = self.request.url
        if status == 304 and self.recorded is not None:
            self.size = self.recorded.size
            return self.result("skipped", unchanged=True)
        if status == 416 and offset > 0:
            return await self._on_416(response, offset)
        if status >= 500 or status in _TRANSIENT_STATUSES:
            raise _Transient(
                f"HTTP {status} {response.reason or ''}".strip(), _retry_after(response.headers)
            )
        if not 200 <= status < 300:
            raise HTTPStatusError(
                f"HTTP {status} {response.reason or ''}".strip(), url=url, status=status
            )

        if not self.name_fixed:
            self.name_fixed = True
            assert self.rel is not None
            # The URL's own name was claimed already (and kept clear of other
            # URLs' files); only a server-given name needs claiming now, and
            # without a Content-Disposition there is none (the usual case:
            # no name is chosen twice).
            disposition = response.headers.get("Content-Disposition")
            limit = self.ctx.name_limit
            wanted = url_name = self.rel
            if disposition is not None:
                wanted = PurePosixPath(choose_name(url, disposition, limit=limit))
                url_name = PurePosixPath(choose_name(url, None, limit=limit))
            if wanted != url_name and wanted.name != self.rel.name:
                # Before the name is released: another URL may claim it.
                self._drop_early()
                await self._claim(wanted)
                await self._avoid_other_urls_files(wanted)
                if offset > 0 or (self.ctx.resume and read_resume_info(self.target)):
                    raise _Reissue  # the Range we sent was for another name
            if skipped := self._skip_if_complete():
                # An unrecorded complete file: record it, so that the next
                # run needs no request for it at all.
                if response.content_length in (None, self.size):
                    self._remember(
                        response.headers.get("ETag"), response.headers.get("Last-Modified")
                    )
                return skipped
            self._check_inside()

        if status == 200 and self.split > 1:
            segmented = await self._segmented(response, None)
            if segmented is not None:
                return segmented
        if status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != offset:
                # Never stitch bytes from the wrong place: start afresh.
                self._discard_part()
                raise _Transient(f"server sent bytes from {first} when {offset} was asked for")
            expected = total
        else:
            offset = 0  # 200 to a Range (or If-Range mismatch): start again
            expected = response.content_length
        return await self._save(response, offset, expected)

    async def _save(
        self, response: aiohttp.ClientResponse | Answer, offset: int, expected: int | None
    ) -> DownloadResult:
        headers = response.headers
        # An early .part is for this name and a fresh start: a new name
        # dropped it (_receive), and a Range request never makes one.
        part = self._early or self._new_part(headers)
        if part is self._early:
            part.set_validators(headers.get("ETag"), headers.get("Last-Modified"))
        assert self.rel is not None
        self._part = part
        emit = self.ctx.emit
        url = self.request.url
        done = False
        try:
            # Inside the try: a cancel while start() hashes a resumed .part
            # in its thread must still close the descriptor (keep() waits).
            try:
                await part.start(offset)
            except DownloadError as exc:
                raise self._write_failure(exc) from exc
            emit(DownloadStarted(url, self.rel.as_posix(), expected, offset))
            try:
                if not await self._receive_body(part, response):
                    pieces = (
                        response.pieces()
                        if isinstance(response, Answer)
                        else _aiohttp_pieces(response)
                    )
                    async for chunk in pieces:
                        await part.write(chunk)
                        emit(DownloadProgress(url, len(chunk)))
            except WriteError as exc:
                raise self._write_failure(exc) from exc
            except Exception as exc:
                if not is_body_error(exc):
                    raise
                raise self._failure(exc, str(response.url)) from exc
            self.size = part.size
            if expected is not None and part.size < expected:
                raise _Transient(f"body ended early: {part.size} of {expected} bytes")
            try:
                digest = await part.commit(
                    expected_size=expected, expected_sha256=self.request.sha256
                )
            except WriteError as exc:
                raise self._write_failure(exc) from exc
            except DownloadError as exc:
                raise type(exc)(str(exc), url=url) from exc
            done = True
            self._remember(headers.get("ETag"), headers.get("Last-Modified"), part.stat)
        finally:
            self.size = part.size
            if not done:
                part.keep()
        return self.result("ok", sha256=digest)

    async def _receive_body(
        self, part: PartFile, response: aiohttp.ClientResponse | Answer
    ) -> bool:
        """A large body on our own connection, received by a thread; False: not taken.

        Only a ``Content-Length`` body with ``THREAD_BODY_BYTES`` or more
        still to come, while the run's :class:`ReceiveBudget` allows.
        """
        budget = self.ctx.receivers
        if not isinstance(response, Answer) or not budget.take(response.body_left()):
            return False
        try:
            body = response.detach_body()
            if body is None:
                return False
            url, emit = self.request.url, self.ctx.emit
            for chunk in body.queued:
                await part.write(chunk)
                emit(DownloadProgress(url, len(chunk)))
            body.queued = []
            await part.receive(body.read_into, body.stop, lambda n: emit(DownloadProgress(url, n)))
        finally:
            budget.give()
        return True

    async def _segmented(
        self, response: aiohttp.ClientResponse | Answer | None, state: dict[str, Any] | None
    ) -> DownloadResult | None:
        """The ``--split`` path: a fresh ``response`` (200) or a saved ``state``.

        ``None``: the answer cannot be segmented; it is saved on one connection.
        """
        from asyncconc.downloader._segmented import (  # only when splitting
            SegmentedFetch,
            SegmentRestart,
            SegmentRetry,
            resume_segmented,
            start_segmented,
        )

        assert self.rel is not None
        fetch = SegmentedFetch(
            sessions=self.ctx.sessions,
            url=self.request.url,
            rel=self.rel.as_posix(),
            target=Path(self.target),
            headers=self.ctx.headers,
            emit=self.ctx.emit,
            checksum=self._checksum,
            expected_sha256=self.request.sha256,
            part_new=self._part_absent,
            receivers=self.ctx.receivers,
        )
        try:
            if response is not None:
                done = await start_segmented(fetch, response, self.split)
                if done is None:
                    return None
            else:
                assert state is not None
                done = await resume_segmented(fetch, state)
        except SegmentRetry as exc:
            raise _Transient(str(exc)) from exc
        except SegmentRestart as exc:
            self._discard_part()
            if exc.split_off:
                self.split = 1
            raise _Reissue from exc
        self.size, digest = done
        if response is not None:
            self._remember(response.headers.get("ETag"), response.headers.get("Last-Modified"))
        else:
            assert state is not None
            etag, modified = state.get("etag"), state.get("last_modified")
            self._remember(
                etag if isinstance(etag, str) else None,
                modified if isinstance(modified, str) else None,
            )
        return self.result("ok", sha256=digest)

    async def _on_416(
        self, response: aiohttp.ClientResponse | Answer, offset: int
    ) -> DownloadResult:
        _, total = _content_range(response.headers.get("Content-Range"))
        if total == offset:
            # The .part is already whole (e.g. Ctrl-C between the last byte
            # and the rename): verify and commit it without new data.
            info = read_resume_info(self.target)
            part = PartFile(
                self.target,
                url=self.request.url,
                etag=info.etag if info else None,
                last_modified=info.last_modified if info else None,
                checksum=self._checksum,
            )
            self._part = part
            try:
                await part.start(offset)
                digest = await part.commit(expected_size=total, expected_sha256=self.request.sha256)
            except DownloadError as exc:
                part.discard()
                raise type(exc)(str(exc), url=self.request.url) from exc
            except BaseException:
                part.keep()  # cancelled: close the descriptor, the .part stays
                raise
            self.size = offset
            self._remember(info.etag if info else None, info.last_modified if info else None)
            return self.result("ok", sha256=digest)
        self._discard_part()
        raise _Reissue

    def _failure(self, exc: BaseException, url: str) -> Exception:
        """The exception to raise for ``exc``: retried, waited for, or final."""
        seconds = self.ctx.sessions.seconds
        failure = classify(exc, url, connect_timeout=seconds, read_timeout=seconds)
        if failure.retry:
            return _Transient(failure.message, backpressure=failure.backpressure)
        return FetchError(failure.message, url=self.request.url)

    def _write_failure(self, exc: DownloadError) -> Exception:
        """A file-system error: EMFILE is waited for, ENOSPC stops new downloads."""
        if is_emfile(exc):
            return _Transient("too many open files", backpressure=True)
        if is_enospc(exc):
            self.ctx.disk_full = True
            where = f" ({self.rel.as_posix()}{PART_SUFFIX} kept for resuming)" if self.rel else ""
            return WriteError(f"no space left on device{where}", url=self.request.url)
        return type(exc)(str(exc), url=self.request.url)

    def _discard_part(self) -> None:
        PartFile(self.target, url=self.request.url, etag=None, last_modified=None).discard()


async def _aiohttp_pieces(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    # iter_chunks, not iter_any: each piece as it was received, where
    # iter_any joins everything buffered into a new bytes (a copy of every
    # byte of a fast download).
    async for chunk, _ in response.content.iter_chunks():
        if chunk:  # b"": the end of a chunk of a chunked body
            yield chunk


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total length) of a Content-Range; ``None`` where absent."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


def _retry_after(headers: CIMultiDictProxy[str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
