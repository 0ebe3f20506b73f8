"""HTTP answers for the test file server: files on disk, ranges, 304.

A plain GET or HEAD of a file on disk (no Range, no conditional header: what
nearly every request is) goes out through :class:`_PlainFileResponse`, which
sends from the descriptor that :mod:`asyncconc.testing._static` opened and
checked without a thread hop: the bytes are read with
``preadv(RWF_NOWAIT)``, which answers from the page cache or refuses at once
(only then is the read done in a thread, so a slow disk still never blocks
the loop), and written in one piece with the headers when the file is small;
on asyncio's loop, larger files go out with ``sendfile``. Profiled under
``ab -c 10`` on 64 KiB (docs/benchmarks-serve.md): aiohttp's FileResponse
spent a third of the process in its thread pool (``stat`` + ``open`` of
``/proc/self/fd/N``, ``read``, ``close``: four hops per request), and uvloop
has no ``loop.sendfile``, so it copied through those threads anyway.

Every other request goes through aiohttp's ``FileResponse`` (304, 412,
If-Range, Range), over the same descriptor; Range and If-Range are decided
here first, strictly, where FileResponse is lenient or wrong. The in-memory
and generated files of the test kit use the same range parser and
conditional-request rule.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import mimetypes
import os
import weakref
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from asyncconc.testing._static import Opened

__all__ = ["error_response", "file_etag", "file_response", "not_modified", "parse_range"]


def file_etag(info: os.stat_result) -> str:
    # The form aiohttp's FileResponse uses, so both paths agree.
    return f'"{info.st_mtime_ns:x}-{info.st_size:x}"'


class _OpenedFileResponse(web.FileResponse):
    """A FileResponse over a descriptor already opened and checked.

    FileResponse opens by path; ``/proc/self/fd/N`` names the very file the
    descriptor holds (not whatever a path resolves to now), so no rename in
    the served folder can change what is sent.
    """

    def __init__(
        self, opened: Opened, content_type: str, seen: web.BaseRequest | None = None
    ) -> None:
        super().__init__(f"/proc/self/fd/{opened.fd}", headers={"Content-Type": content_type})
        # Closed after prepare(), or when the response is dropped unsent.
        self._release = weakref.finalize(self, os.close, opened.fd)
        self._fd = opened.fd
        self._seen = seen  # the request as FileResponse should see it (Range fixed)

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self.prepared:  # aiohttp calls prepare() again on a handler's response
            return await web.StreamResponse.prepare(self, request)
        try:
            writer = await super().prepare(self._seen or request)
            shrank = self.status in (200, 206) and os.fstat(self._fd).st_size < self._end()
            if shrank and request.transport is not None:
                # Fewer bytes went out than announced: this connection carries
                # no further response.
                request.transport.close()
            return writer
        finally:
            self._release()

    def _end(self) -> int:
        """Where the body sent should have ended in the file."""
        content_range = self.headers.get("Content-Range", "")
        if self.status == 206 and "-" in content_range:
            return int(content_range.split("-", 1)[1].split("/", 1)[0]) + 1
        return self.content_length or 0


# Headers that need FileResponse's rules (ranges, validators, preconditions).
_NOT_PLAIN = (
    "Range",
    "If-Range",
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
)
_INLINE = 1 << 20  # read whole and written with the headers up to this size
_PIECE = 1 << 20  # larger files: read and written in pieces of this size
_NO_NATIVE_SENDFILE: set[type[asyncio.AbstractEventLoop]] = set()


def _read_cached(fd: int, size: int, pos: int) -> bytes | bytearray | None:
    """Up to ``size`` bytes at ``pos`` if the page cache has them, else ``None``."""
    buf = bytearray(size)
    try:
        got = os.preadv(fd, [buf], pos, os.RWF_NOWAIT)
    except BlockingIOError:
        return None  # not cached: the caller reads in a thread
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return None  # a file system without RWF_NOWAIT
        raise
    if got == size:
        return buf
    return bytes(buf[:got])  # part of it cached, or the file ends (shrank) here


class _PlainFileResponse(web.StreamResponse):
    """A whole file on disk, sent from its checked descriptor (module doc)."""

    # As aiohttp's web.Response: the headers wait for the first body write and go
    # out with it in one system call (flushed by hand before ``sendfile``).
    _send_headers_immediately = False

    def __init__(self, opened: Opened, content_type: str) -> None:
        info = opened.stat
        super().__init__(headers={"Content-Type": content_type, "Accept-Ranges": "bytes"})
        # As FileResponse sets them, so both paths send the same validators.
        self.etag = file_etag(info).strip('"')
        self.last_modified = info.st_mtime
        self.content_length = info.st_size
        # Closed after prepare(), or when the response is dropped unsent.
        self._release = weakref.finalize(self, os.close, opened.fd)
        self._fd = opened.fd

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self.prepared:  # aiohttp calls prepare() again on a handler's response
            return await super().prepare(request)
        try:
            size = self.content_length or 0
            if request.method == "HEAD" or size == 0:
                return await super().prepare(request)
            return await self._send(request, size)
        finally:
            self._release()

    async def _send(self, request: web.BaseRequest, size: int) -> Any:
        fd, loop = self._fd, asyncio.get_running_loop()
        writer = await super().prepare(request)
        transport = request.transport
        if writer is None or transport is None:
            raise ConnectionResetError("Connection lost")
        sent = 0
        if (
            size > _INLINE
            and type(loop) not in _NO_NATIVE_SENDFILE
            and transport.get_extra_info("sslcontext") is None
        ):
            writer.send_headers()
            try:
                # A file object over the checked descriptor (not reopened by path).
                fobj = os.fdopen(fd, "rb", closefd=False)
                with fobj:
                    sent = await loop.sendfile(transport, fobj, 0, size, fallback=False)
            except NotImplementedError:  # uvloop: no sendfile; copies below
                _NO_NATIVE_SENDFILE.add(type(loop))
            except asyncio.exceptions.SendfileNotAvailableError:
                pass
        while sent < size:
            want = min(_INLINE if sent == 0 else _PIECE, size - sent)
            piece = _read_cached(fd, want, sent)
            if piece is None:
                piece = await asyncio.to_thread(os.pread, fd, want, sent)
            if not piece:
                break  # the file shrank while it was sent
            await writer.write(piece)
            sent += len(piece)
        if sent < size:
            # Fewer bytes went out than announced: this connection carries no
            # further response (the client would read it as body).
            transport.close()
            return writer
        await super().write_eof()
        return writer


async def file_response(request: web.BaseRequest, name: str, opened: Opened) -> web.StreamResponse:
    """Range and If-Range decided here, strictly; the rest by FileResponse.

    FileResponse compares If-Range as a date only (a stale ETag still got
    206), answers ``bytes=-5`` on an empty file with ``206 bytes 0--1/0``,
    and takes ``bytes=1_0-2_0`` (Python's ``int``); so the request it sees
    carries either no Range or one plain ``bytes=A-B`` it cannot misread.
    """
    info = opened.stat
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    headers_in = request.headers
    if not any(h in headers_in for h in _NOT_PLAIN):
        return _PlainFileResponse(opened, content_type)
    if range_header is None and if_range is None:
        return _OpenedFileResponse(opened, content_type)
    headers = CIMultiDict(request.headers)
    headers.popall("If-Range", None)
    headers.popall("Range", None)
    if range_header is not None:
        last_modified = email.utils.formatdate(info.st_mtime, usegmt=True)
        fresh = if_range is None or if_range in (file_etag(info), last_modified)
        parsed = parse_range(range_header, info.st_size)
        if fresh and parsed == "unsatisfiable":
            os.close(opened.fd)
            refused = error_response(416)
            refused.headers["Content-Range"] = f"bytes */{info.st_size}"
            return refused
        if fresh and isinstance(parsed, tuple):
            headers["Range"] = f"bytes={parsed[0]}-{parsed[1] - 1}"
    return _OpenedFileResponse(opened, content_type, request.clone(headers=headers))


def not_modified(request: web.BaseRequest, etag: str, mtime: float) -> bool:
    """RFC 9110 13.1.2-3: If-None-Match wins; If-Modified-Since otherwise."""
    if request.method not in ("GET", "HEAD"):
        return False
    none_match = request.headers.get("If-None-Match")
    if none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in none_match.split(",")}
        return "*" in tags or etag in tags
    since = request.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False  # an invalid date is ignored
    return int(mtime) <= when


def error_response(status: int) -> web.Response:
    body = f"<html><body>error {status}</body></html>"
    return web.Response(status=status, text=body, content_type="text/html")


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range, end exclusive.

    ``None``: not a single valid byte range, so it is ignored (RFC 9110
    14.2: a 200 with the whole file). The unit is case-insensitive; the
    numbers are plain digits (``int()`` would take ``1_0`` and ``+5``).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not all(x == "" or (x.isascii() and x.isdigit()) for x in (first, last)):
        return None
    if first == "":
        if last == "":
            return None
        n = int(last)
        # A suffix of an empty file, or of zero bytes, selects nothing.
        return (max(size - n, 0), size) if n > 0 and size > 0 else "unsatisfiable"
    a = int(first)
    b = int(last) + 1 if last else size
    if last and b <= a:
        return None  # a syntactically invalid range is ignored (RFC 9110 14.2)
    if a >= size:
        return "unsatisfiable"
    return a, min(b, size)
