"""Files on disk, served from one folder with no way out of it.

:class:`StaticRoot` opens the folder once (a relative path is resolved at
start) and keeps its descriptor. A request's path is then walked one
component at a time with ``openat(parent_fd, name, O_NOFOLLOW)``: a symlink
anywhere on the way, ``..``, a NUL or an over-long name is refused, and what
is served is what was opened. Checking a path with ``resolve()`` and opening
it later by name is racy (a folder swapped for a symlink in between serves a
file from outside); opening first and checking the opened descriptor is not.

The opened file is handed to :class:`aiohttp.web.FileResponse` through
``/proc/self/fd/N``, which re-opens *that* open file (not a path looked up
again), so Range, conditional requests, Content-Type and ``sendfile`` are
aiohttp's own. Only what it lacks is put in front: an ``If-Range`` with an
ETag (aiohttp compares dates only), ``405`` for other methods.
"""

from __future__ import annotations

import asyncio
import errno
import html
import logging
import mimetypes
import os
import resource
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest

__all__ = ["DEFAULT_LIMITS", "BadPathError", "ServeLimits", "StaticRoot"]

_log = logging.getLogger("asyncconc.serve")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NAME_MAX = 255


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """What one client may hold: time and header sizes (aiohttp handler options).

    ``idle_timeout`` closes a connection that has no complete request for
    that long: a silent socket, a client sending headers too slowly (the
    timer is not re-armed by partial data), an idle keep-alive connection.
    Header lines longer than ``max_line_size`` / ``max_field_size`` bytes or
    more than ``max_headers`` headers get an error status.
    """

    idle_timeout: float = 15.0
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 100
    max_connections: int = 512
    """Open connections at once; more are closed on arrival. Never more than
    the descriptor limit (``RLIMIT_NOFILE``) less 64 for files and the loop."""

    def connection_cap(self) -> int:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - 64))

    def apply(self, server: web.Server) -> None:
        """Cap ``server``'s open connections (see ``max_connections``)."""
        cap = self.connection_cap()
        accept = server.connection_made

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            accept(handler, transport)
            if len(server.connections) > cap:
                transport.abort()  # over the cap: refused before any request is read

        server.connection_made = connection_made  # type: ignore[method-assign]

    def handler_kwargs(self) -> dict[str, Any]:
        return {
            "keepalive_timeout": self.idle_timeout,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
        }


DEFAULT_LIMITS = ServeLimits()


class BadPathError(ValueError):
    """A request path that can never name a file (NUL, ``..``, too long)."""


class StaticRoot:
    """One served folder: its descriptor, opened once at start."""

    def __init__(self, root: str | os.PathLike[str], *, listing: bool = False) -> None:
        self.path = Path(os.path.abspath(root))
        self.listing = listing
        self._fd: int | None = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def open(self, name: str, *, folder: bool = False) -> int | None:
        """A descriptor of regular file ``name`` under the root, or ``None``.

        ``folder=True``: of folder ``name`` instead (``""`` is the root).
        Raises :class:`BadPathError` for a path that is malformed (rather
        than merely absent). The caller closes the descriptor.
        """
        if self._fd is None:
            raise RuntimeError("StaticRoot is closed")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        for part in parts:
            if "\x00" in part:
                raise BadPathError("NUL in path")
            if part == "..":
                raise BadPathError("'..' in path")
            if len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX:
                raise BadPathError(f"path component longer than {_NAME_MAX} bytes")
        if not parts:
            return os.dup(self._fd) if folder else None
        fd = os.dup(self._fd)
        try:
            for part in parts[:-1]:
                parent, fd = fd, -1
                try:
                    fd = os.open(part, _DIR_FLAGS, dir_fd=parent)
                finally:
                    os.close(parent)
            parent, fd = fd, -1
            try:
                fd = os.open(parts[-1], _DIR_FLAGS if folder else _FILE_FLAGS, dir_fd=parent)
            finally:
                os.close(parent)
            if not folder and not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return None
            os.set_blocking(fd, True)
            return fd
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.EISDIR):
                return None
            if exc.errno == errno.ENAMETOOLONG:
                raise BadPathError("path too long") from None
            raise

    async def respond(self, request: web.Request, name: str) -> web.StreamResponse:
        """Answer ``request`` for file ``name`` (a path relative to the root)."""
        if request.method not in ("GET", "HEAD"):
            return web.Response(
                status=405, text="method not allowed\n", headers={"Allow": "GET, HEAD"}
            )
        try:
            fd = self.open(name)
        except BadPathError as exc:
            _log.warning("400 %s: %s", request.path, exc)
            return web.Response(status=400, text=f"bad path: {exc}\n")
        if fd is None:
            if self.listing and (index := self._index(request, name)) is not None:
                return index
            return web.Response(status=404, text="not found\n")
        return _OpenedFileResponse(fd, name)

    def _index(self, request: web.Request, name: str) -> web.Response | None:
        """An HTML list of folder ``name`` (names escaped), or ``None``."""
        fd = self.open(name, folder=True)
        if fd is None:
            return None
        if name and not name.endswith("/"):
            os.close(fd)
            raise web.HTTPMovedPermanently(quote(request.path + "/"))
        try:
            with os.scandir(fd) as it:
                entries = sorted((e.name + ("/" if e.is_dir() else "")) for e in it)
        finally:
            os.close(fd)
        title = html.escape("/" + name)
        items = "".join(
            f'<li><a href="{html.escape(quote(e))}">{html.escape(e)}</a></li>\n' for e in entries
        )
        body = f"<!DOCTYPE html>\n<title>{title}</title>\n<h1>{title}</h1>\n<ul>\n{items}</ul>\n"
        return web.Response(text=body, content_type="text/html")


class _OpenedFileResponse(web.FileResponse):
    """A FileResponse of a descriptor already opened safely (closed after)."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__(f"/proc/self/fd/{fd}")
        self._fd: int | None = fd
        self.content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    async def _sendfile(
        self, request: BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        writer = await super()._sendfile(request, fobj, offset, count)
        if os.fstat(fobj.fileno()).st_size < offset + count and request.transport is not None:
            # The file shrank while it was sent: fewer bytes than announced
            # went out. Closing tells the client so; kept alive, the next
            # response would be read as the rest of this body.
            _log.warning("%s shrank while being sent: connection closed", request.path)
            request.transport.close()
        return writer

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        try:
            assert self._fd is not None
            st = os.fstat(self._fd)
            if_range = request.headers.get(hdrs.IF_RANGE)
            if if_range is not None and hdrs.RANGE in request.headers:
                etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
                fresh = if_range == etag or (
                    request.if_range is not None and st.st_mtime <= request.if_range.timestamp()
                )
                if not fresh:  # a stale validator: the whole file, 200
                    headers = request.headers.copy()
                    del headers[hdrs.RANGE]
                    del headers[hdrs.IF_RANGE]
                    request = request.clone(headers=headers)
            return await super().prepare(request)
        finally:
            self._close_fd()
