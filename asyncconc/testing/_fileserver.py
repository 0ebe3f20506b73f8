"""A loopback HTTP file server with Range support and fault injection.

:func:`serve_files` runs an :mod:`aiohttp.web` server on 127.0.0.1 (port 0
by default: the OS picks a free one), is ready before it yields, and closes
in ``finally``. Files come from a folder, from bytes, or are generated on the
fly (:mod:`asyncconc.testing._content`), so large files cost no memory.

Faults are asked for in the query string of a file's URL, so one file can be
served well and badly side by side (``server.url("a.bin", fail=2)``):

=================  =========================================================
``status=N``       always answer status N (with an HTML error body)
``fail=K``         the first K requests of this URL answer ``fail_status``
                   (default 503), with ``Retry-After: retry_after`` if given
``delay=S``        wait S seconds before the headers
``truncate=N``     announce the full length, send N bytes, drop the
                   connection (the first ``times`` requests; default all)
``stall=N``        send N bytes then stop sending, connection kept open
                   (the first ``times`` requests; default all)
``drip=S``         send the body in ``drip_size`` pieces (default 1024)
                   with S seconds between them: slow but moving
``norange=1``      ignore Range (always 200 with the whole file)
``badrange=1``     answer a Range request with a 206 that starts at 0
``cd=VALUE``       send ``Content-Disposition: VALUE`` verbatim
``redirect=N``     redirect N times before serving
``location=URL``   redirect once to URL (any scheme)
``loop=1``         redirect to itself, forever
``gzip=1``         label the bytes ``Content-Encoding: gzip`` (unchanged)
``chunked=1``      no Content-Length (chunked transfer encoding)
``novalidator=1``  no ETag and no Last-Modified
=================  =========================================================

Every request is recorded in :attr:`FileServer.requests` (path, query,
headers) so tests can assert what a client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import os
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import aiofiles
from aiohttp import web

from asyncconc.testing._content import pattern_chunks, pattern_sha256
from asyncconc.testing._static import DEFAULT_LIMITS, ServeLimits, StaticRoot

__all__ = ["FileServer", "RecordedRequest", "ServedFile", "serve_files"]

_READ_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class ServedFile:
    """A file the server can serve: its name, size and sha256."""

    name: str
    size: int
    sha256: str
    etag: str


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]


@dataclass(slots=True)
class _Source:
    size: int
    sha256: str
    etag: str
    mtime: float
    data: bytes | None = None
    seed: int | None = None
    path: Path | None = None
    static: StaticRoot | None = None

    def info(self, name: str) -> ServedFile:
        return ServedFile(name=name, size=self.size, sha256=self.sha256, etag=self.etag)

    async def chunks(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Pieces of bytes [start, end), produced lazily.

        Files on disk are read with aiofiles: a served folder may sit on a
        slow disk, and the server's loop must keep answering meanwhile (one
        thread hop per 256 KiB piece is cheap next to the read itself).
        """
        if self.data is not None:
            for pos in range(start, end, _READ_SIZE):
                yield self.data[pos : min(pos + _READ_SIZE, end)]
        elif self.seed is not None:
            for piece in pattern_chunks(self.size, self.seed, start, end):
                yield piece
        else:
            assert self.path is not None
            assert self.static is not None
            fd = self.static.open(str(self.path))  # safely, again (see _static)
            if fd is None:
                return
            async with aiofiles.open(fd, "rb") as fh:
                await fh.seek(start)
                left = end - start
                while left > 0:
                    piece = await fh.read(min(_READ_SIZE, left))
                    if not piece:
                        return
                    left -= len(piece)
                    yield piece


@dataclass(slots=True)
class FileServer:
    """Handle on a running :func:`serve_files` server."""

    host: str
    port: int = 0
    root: Path | None = None
    delay: float = 0.0
    faults: bool = True
    requests: list[RecordedRequest] = field(default_factory=list)
    _sources: dict[str, _Source] = field(default_factory=dict)
    _counts: Counter[str] = field(default_factory=Counter)
    _version: int = 0
    _static: StaticRoot | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, name: str, **faults: object) -> str:
        """The URL of ``name``, with fault parameters (see the module doc)."""
        query = urlencode({k: str(v) for k, v in faults.items()})
        return f"{self.base_url}/{quote(name)}" + (f"?{query}" if query else "")

    def add_bytes(self, name: str, data: bytes) -> ServedFile:
        """Serve ``data`` as ``name``; replacing a file changes its validators."""
        digest = hashlib.sha256(data).hexdigest()
        return self._add(name, _Source(len(data), digest, "", 0.0, data=data))

    def add_generated(self, name: str, size: int, seed: int | None = None) -> ServedFile:
        """Serve a deterministic generated file of ``size`` bytes, built lazily."""
        if seed is None:
            seed = len(self._sources) + 1
        return self._add(name, _Source(size, pattern_sha256(size, seed), "", 0.0, seed=seed))

    def _add(self, name: str, source: _Source) -> ServedFile:
        self._version += 1
        source.etag = f'"{source.sha256[:16]}-{self._version}"'
        source.mtime = 1_700_000_000.0 + self._version
        self._sources[name.lstrip("/")] = source
        return source.info(name)

    def remove(self, name: str) -> None:
        """Stop serving ``name`` (it answers 404 afterwards)."""
        self._sources.pop(name.lstrip("/"), None)

    def hits(self, name: str) -> int:
        """How many requests arrived for ``name`` (any query)."""
        return sum(1 for r in self.requests if r.path == "/" + name.lstrip("/"))

    def requests_for(self, name: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/" + name.lstrip("/")]

    def _lookup(self, name: str) -> _Source | None:
        source = self._sources.get(name)
        if source is not None or self._static is None:
            return source
        try:
            fd = self._static.open(name)
        except ValueError:
            return None
        if fd is None:
            return None
        try:
            stat = os.fstat(fd)
        finally:
            os.close(fd)
        tag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        return _Source(stat.st_size, "", tag, stat.st_mtime, path=Path(name), static=self._static)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(q), dict(request.headers))
        )
        name = request.match_info["name"]
        if (
            self._static is not None
            and name not in self._sources
            and (not self.faults or not request.query)
        ):
            # A file on disk, no faults asked for: aiohttp's FileResponse.
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            return await self._static.respond(request, name)
        key = request.path_qs
        self._counts[key] += 1
        nth = self._counts[key]
        delay = float(q.get("delay", self.delay))
        if delay > 0:
            await asyncio.sleep(delay)

        if "status" in q:
            return _error(int(q["status"]))
        if int(q.get("fail", 0)) >= nth:
            response = _error(int(q.get("fail_status", 503)))
            if "retry_after" in q:
                response.headers["Retry-After"] = q["retry_after"]
            return response
        if redirect := _redirect_target(request, q):
            raise web.HTTPFound(redirect)

        source = self._lookup(request.match_info["name"])
        if source is None:
            return _error(404)
        stream = web.StreamResponse()
        try:
            return await self._send(request, source, nth, stream)
        except ConnectionResetError:
            # The client hung up (it skipped the file, or gave up): normal.
            return stream

    async def _send(
        self, request: web.Request, source: _Source, nth: int, response: web.StreamResponse
    ) -> web.StreamResponse:
        q = request.query
        start, end, status = 0, source.size, 200
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        last_modified = email.utils.formatdate(source.mtime, usegmt=True)
        if range_header and not q.get("norange"):
            fresh = if_range is None or if_range in (source.etag, last_modified)
            parsed = _parse_range(range_header, source.size)
            if parsed == "unsatisfiable" and fresh:
                response = _error(416)
                response.headers["Content-Range"] = f"bytes */{source.size}"
                return response
            if isinstance(parsed, tuple) and fresh:
                start, end = parsed
                status = 206
                if q.get("badrange"):
                    start = 0

        response.set_status(status)
        headers = response.headers
        headers["Content-Type"] = "application/octet-stream"
        headers["Accept-Ranges"] = "none" if q.get("norange") else "bytes"
        if not q.get("novalidator"):
            headers["ETag"] = source.etag
            headers["Last-Modified"] = last_modified
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{source.size}"
        if "cd" in q:
            headers["Content-Disposition"] = q["cd"]
        if q.get("gzip"):
            headers["Content-Encoding"] = "gzip"
        if q.get("chunked"):
            response.enable_chunked_encoding()
        else:
            response.content_length = end - start
        await response.prepare(request)
        if request.method == "HEAD":
            return response

        times = int(q.get("times", 1 << 30))
        cut = int(q["truncate"]) if "truncate" in q and nth <= times else None
        stall = int(q["stall"]) if "stall" in q and nth <= times else None
        limit = min(x for x in (cut, stall, end - start) if x is not None)
        drip = float(q.get("drip", 0))
        piece = int(q.get("drip_size", 1024)) if drip else _READ_SIZE
        sent = 0
        # aclosing: a client that hangs up mid-body must not leave the file open.
        async with contextlib.aclosing(source.chunks(start, start + limit)) as chunks:
            async for chunk in chunks:
                for pos in range(0, len(chunk), piece):
                    await response.write(chunk[pos : pos + piece])
                    sent += min(piece, len(chunk) - pos)
                    if drip:
                        await asyncio.sleep(drip)
        if stall is not None:
            await asyncio.Event().wait()  # until the client gives up
        if cut is not None:
            assert request.transport is not None
            request.transport.close()  # body ends early
            return response
        await response.write_eof()
        return response


def _error(status: int) -> web.Response:
    body = f"<html><body>error {status}</body></html>"
    return web.Response(status=status, text=body, content_type="text/html")


def _redirect_target(request: web.Request, q: Mapping[str, str]) -> str | None:
    if "location" in q:
        return q["location"]
    if q.get("loop"):
        return str(request.rel_url)
    hops = int(q.get("redirect", 0))
    if hops > 0:
        rest = {k: v for k, v in q.items() if k != "redirect"}
        if hops > 1:
            rest["redirect"] = str(hops - 1)
        return request.path + ("?" + urlencode(rest) if rest else "")
    return None


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range, end exclusive."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(size - n, 0), size) if n > 0 else "unsatisfiable"
        a = int(first)
        b = int(last) + 1 if last else size
    except ValueError:
        return None
    if a < 0 or (last and b <= a):
        return None  # a syntactically invalid range is ignored (RFC 9110 14.2)
    if a >= size:
        return "unsatisfiable"
    return a, min(b, size)


@contextlib.asynccontextmanager
async def serve_files(
    root: str | os.PathLike[str] | None = None,
    *,
    files: Mapping[str, bytes] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    delay: float = 0.0,
    faults: bool = True,
    limits: ServeLimits = DEFAULT_LIMITS,
    listing: bool = False,
) -> AsyncIterator[FileServer]:
    """Serve ``root`` (a folder) and ``files`` (name -> bytes) on ``host:port``.

    The server listens before this yields and is closed (connections
    dropped) when the block exits, also on cancellation. ``root`` is opened
    once, here (a relative path is resolved now). ``faults=False`` ignores
    fault parameters (files on disk are served as they are). ``limits``
    bounds idle time, header sizes and connections (:class:`ServeLimits`);
    ``listing=True`` answers a folder's URL with an HTML index.
    """
    static = StaticRoot(root, listing=listing) if root is not None else None
    server = FileServer(
        host=host,
        root=static.path if static is not None else None,
        delay=delay,
        faults=faults,
        _static=static,
    )
    for name, data in (files or {}).items():
        server.add_bytes(name, data)
    app = web.Application()
    app.router.add_route("*", "/{name:.*}", server._handle)
    # handler_cancellation: a handler whose client hung up is cancelled, so a
    # ``stall``/``delay`` response ends "when the client gives up" instead of
    # lingering until shutdown (a long-lived server would pile them up).
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=0.5,
        handler_cancellation=True,
        **limits.handler_kwargs(),
    )
    try:
        await runner.setup()
        assert runner.server is not None
        limits.apply(runner.server)
        site = web.TCPSite(runner, host, port)
        await site.start()
        assert site._server is not None
        sockets = getattr(site._server, "sockets", None) or []
        server.port = sockets[0].getsockname()[1]
        yield server
    finally:
        try:
            await runner.cleanup()
        finally:
            if static is not None:
                static.close()
