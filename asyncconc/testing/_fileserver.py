"""A loopback HTTP file server with Range support and fault injection.

:func:`serve_files` runs an :mod:`aiohttp.web` server on 127.0.0.1 (port 0
by default: the OS picks a free one), is ready before it yields, and closes
in ``finally``. Files come from a folder, from bytes, or are generated on the
fly (:mod:`asyncconc.testing._content`), so large files cost no memory.

Faults are asked for in the query string of a file's URL, so one file can be
served well and badly side by side (``server.url("a.bin", fail=2)``):

=================  =========================================================
``status=N``       answer status N (200-599; 200 serves the file) with an
                   HTML error body, and ``Retry-After: retry_after`` if given
``fail=K``         the first K requests of this URL answer ``fail_status``
                   (400-599, default 503), with ``Retry-After: retry_after``
``delay=S``        wait S seconds (at most 300) before the headers
``truncate=N``     announce the full length, send N bytes, drop the
                   connection (the first ``times`` requests that get the
                   file, after any ``fail``; default all)
``stall=N``        send N bytes then stop sending, connection kept open
                   until the client gives up (at most 300 s); ``times`` as
                   for ``truncate``
``times=N``        how many requests ``truncate``/``stall`` apply to
``drip=S``         send the body in ``drip_size`` pieces (default 1024)
                   with S seconds between them: slow but moving
``norange=1``      ignore Range (always 200 with the whole file)
``badrange=1``     answer a Range request with a 206 that starts at 0
``cd=VALUE``       send ``Content-Disposition: VALUE`` verbatim
``redirect=N``     redirect N times before serving
``location=URL``   redirect once to URL, verbatim (any scheme, to test that
                   clients refuse ``javascript:``; no CR, LF or NUL)
``loop=1``         redirect to itself, forever
``redirect_status``  the status of those redirects: 301, 302 (default),
                   303, 307 or 308
``gzip=1``         label the bytes ``Content-Encoding: gzip`` (unchanged)
``chunked=1``      no Content-Length (chunked transfer encoding)
``novalidator=1``  no ETag and no Last-Modified
=================  =========================================================

Flags are off when false (``norange=False``, ``gzip=0``); an unknown name or
a bad value is a ``ValueError`` from :meth:`FileServer.url` and a ``400``
with the reason on the wire (:mod:`asyncconc.testing._faults`).

The last ``history`` requests (10,000 by default) are kept in
:attr:`FileServer.requests` with their headers, body and time, and
expectations can be declared with :meth:`FileServer.expect`
(:mod:`asyncconc.testing._recording`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import html
import os
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from aiohttp import web

from asyncconc.testing import _faults
from asyncconc.testing._content import pattern_chunks, pattern_sha256
from asyncconc.testing._faults import MAX_DELAY, Faults, check_names, parse_faults, query_value
from asyncconc.testing._http import (
    error_response,
    file_etag,
    file_response,
    not_modified,
    parse_range,
)
from asyncconc.testing._limits import LimitedServer
from asyncconc.testing._recording import DEFAULT_HISTORY, RecordedRequest, Recorder
from asyncconc.testing._static import BadPathError, Folder, Opened

__all__ = ["FileServer", "RecordedRequest", "ServedFile", "serve_files"]

_READ_SIZE = 256 * 1024
# Per-URL request counters (for ``fail`` and ``times``): the most recent ones.
_MAX_COUNTERS = 10_000


class ServedFile:
    """A file the server can serve: its name, size, ETag and sha256.

    ``sha256`` is computed on first use (and kept): adding a generated GiB
    costs nothing until a test asks for its digest.
    """

    __slots__ = ("_source", "etag", "name", "size")

    def __init__(self, name: str, source: _Source) -> None:
        self.name = name
        self.size = source.size
        self.etag = source.etag
        self._source = source

    @property
    def sha256(self) -> str:
        return self._source.digest()

    def __repr__(self) -> str:
        return f"ServedFile(name={self.name!r}, size={self.size}, etag={self.etag!r})"


@dataclass(slots=True)
class _Source:
    size: int
    sha256: str | None  # None: not computed yet (see digest())
    etag: str
    mtime: float
    data: bytes | None = None
    seed: int | None = None
    fd: int | None = None  # a file under the served folder, opened by Folder
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] | None = None

    def info(self, name: str) -> ServedFile:
        return ServedFile(name, self)

    def digest(self) -> str:
        if self.sha256 is None:
            if self.data is not None:
                self.sha256 = hashlib.sha256(self.data).hexdigest()
            elif self.seed is not None:
                self.sha256 = pattern_sha256(self.size, self.seed)
            else:
                self.sha256 = ""
        return self.sha256

    async def chunks(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Pieces of bytes [start, end), produced lazily.

        Files on disk are read in a thread, through the descriptor that was
        opened and checked (never by path): a served folder may sit on a slow
        disk, and the loop must keep answering meanwhile (one thread hop per
        256 KiB piece is cheap next to the read itself).
        """
        if self.data is not None:
            for pos in range(start, end, _READ_SIZE):
                yield self.data[pos : min(pos + _READ_SIZE, end)]
        elif self.seed is not None:
            for piece in pattern_chunks(self.size, self.seed, start, end):
                yield piece
        else:
            assert self.fd is not None
            pos = start
            while pos < end:
                piece = await asyncio.to_thread(os.pread, self.fd, min(_READ_SIZE, end - pos), pos)
                if not piece:
                    return  # the file shrank: the caller closes the connection
                pos += len(piece)
                yield piece


@dataclass(slots=True)
class FileServer:
    """Handle on a running :func:`serve_files` server."""

    host: str
    port: int = 0
    root: Path | None = None
    faults: bool = True
    """False: the query string is ignored, as a static server does (``serve``)."""
    listing: bool = False
    """True: a folder's URL (ending in ``/``) answers an HTML index of it."""
    delay: float = 0.0
    header_timeout: float = 10.0
    """Seconds a request's headers (and body) may take to arrive; 0: no limit."""
    history: int | None = DEFAULT_HISTORY
    ssl_context: ssl.SSLContext | None = None
    """For clients of a ``tls=True`` server: trusts its throwaway CA only."""
    ca_pem: bytes | None = None
    """The throwaway CA's certificate (PEM), for ``curl --cacert`` and the like."""
    _sources: dict[str, _Source] = field(default_factory=dict)
    _counts: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _version: int = 0
    _recorder: Recorder = field(init=False)
    _folder: Folder | None = None

    def __post_init__(self) -> None:
        if self.history is not None and self.history < 0:
            raise ValueError(f"history={self.history!r}: must be 0 or more (None: unbounded)")
        self._recorder = Recorder(self.history)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The last ``history`` requests, oldest first (a snapshot)."""
        with self._recorder._lock:
            return list(self._recorder.requests)

    @property
    def in_flight(self) -> int:
        """Requests being answered right now."""
        return self._recorder.in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests answered at once so far (for concurrency limits)."""
        return self._recorder.max_in_flight

    def expect(
        self,
        name: str,
        *,
        method: str | None = None,
        query: Mapping[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Expect ``times`` requests for ``name`` (``None``: at least one).

        Checked by :meth:`verify` (the pytest fixtures call it after the
        test). ``ordered`` / ``strict`` (:meth:`configure_expectations`)
        make the order matter and any other request a failure.
        """
        self._recorder.expect(name, method=method, query=query, times=times)

    def configure_expectations(self, *, ordered: bool = False, strict: bool = False) -> None:
        """``ordered``: expectations must be met in the order declared;
        ``strict``: a request no expectation matches fails :meth:`verify`."""
        self._recorder.ordered = ordered
        self._recorder.strict = strict

    def verify(self) -> None:
        """Raise ``AssertionError`` naming every unmet expectation."""
        self._recorder.verify()

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{host}:{self.port}"

    def url(self, name: str, *, query: object = None, **faults: object) -> str:
        """The URL of ``name``, with fault parameters (see the module doc).

        Raises ``ValueError`` for an unknown fault name or a bad value; false
        values (``False``, ``0`` for a flag, ``None``) leave a fault off.
        ``query`` adds ordinary parameters the server ignores (``id=7``).
        """
        check_names(faults)
        params = {
            k: v for k, v in ((k, query_value(v)) for k, v in faults.items()) if v is not None
        }
        parse_faults(params)
        if query is not None and not isinstance(query, Mapping):
            raise TypeError(f"query= must be a mapping of names to values, not {query!r}")
        extra = {str(k): str(v) for k, v in (query or {}).items()}
        clash = sorted(set(extra) & _faults.KNOWN)
        if clash:
            raise ValueError(f"query={{{clash[0]!r}: ...}} is a fault name: pass it as {clash[0]}=")
        encoded = urlencode({**extra, **params})
        return f"{self.base_url}/{quote(name.lstrip('/'))}" + (f"?{encoded}" if encoded else "")

    def add_bytes(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        headers: Mapping[str, str] | None = None,
    ) -> ServedFile:
        """Serve ``data`` as ``name``; replacing a file changes its validators.

        ``content_type`` and ``headers`` (extra response headers) are sent
        with every answer that carries the file.
        """
        source = _Source(len(data), None, "", 0.0, data=data)
        return self._add(name, source, content_type, headers)

    def add_generated(
        self,
        name: str,
        size: int,
        seed: int | None = None,
        *,
        content_type: str = "application/octet-stream",
        headers: Mapping[str, str] | None = None,
    ) -> ServedFile:
        """Serve a deterministic generated file of ``size`` bytes, built lazily.

        Neither the bytes nor their sha256 are computed up front.
        """
        if seed is None:
            seed = len(self._sources) + 1
        return self._add(name, _Source(size, None, "", 0.0, seed=seed), content_type, headers)

    def _add(
        self,
        name: str,
        source: _Source,
        content_type: str,
        headers: Mapping[str, str] | None,
    ) -> ServedFile:
        self._version += 1
        source.content_type = content_type
        source.headers = dict(headers) if headers else None
        # Unique per add: replacing a file changes its validators.
        source.etag = f'"{id(self):x}-{self._version:x}-{source.size:x}"'
        source.mtime = 1_700_000_000.0 + self._version
        self._sources[name.lstrip("/")] = source
        return source.info(name)

    def remove(self, name: str) -> None:
        """Stop serving ``name`` (it answers 404 afterwards)."""
        self._sources.pop(name.lstrip("/"), None)

    def hits(self, name: str) -> int:
        """How many requests for ``name`` (any query) are in the history."""
        return sum(1 for r in self.requests if r.path == "/" + name.lstrip("/"))

    def requests_for(self, name: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/" + name.lstrip("/")]

    def _open(self, name: str) -> Opened | None:
        """A file under the served folder, opened safely (see ``_static``)."""
        return None if self._folder is None else self._folder.open(name)

    def _index(self, path: str, name: str) -> web.StreamResponse:
        assert self._folder is not None
        try:
            entries = self._folder.listing(name)
        except BadPathError as exc:
            return web.Response(status=400, text=f"bad path: {exc}\n")
        if entries is None:
            return error_response(404)
        title = html.escape(path)
        rows = [
            f'<li><a href="{quote(n)}{"/" if d else ""}">{html.escape(n)}{"/" if d else ""}</a>'
            for n, d in entries
        ]
        body = (
            f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body><h1>{title}</h1><ul>{''.join(rows)}</ul></body></html>\n"
        )
        return web.Response(text=body, content_type="text/html")

    def _count(self, key: str) -> int:
        """This request's number among those for ``key`` (bounded memory)."""
        nth = self._counts.pop(key, 0) + 1
        self._counts[key] = nth
        if len(self._counts) > _MAX_COUNTERS:
            self._counts.popitem(last=False)
        return nth

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        recorder = self._recorder
        recorder.started()
        try:
            body = b""
            try:
                if request.body_exists:
                    # A body dribbled in is bounded like headers are (``_limits``).
                    async with asyncio.timeout(self.header_timeout or None):
                        body = await request.read()
            except TimeoutError:
                # Answered, then the connection closed: the rest of the body
                # is not waited for (aiohttp would linger reading it).
                refused = web.Response(status=408, text="request body too slow\n")
                await refused.prepare(request)
                await refused.write_eof()
                if request.transport is not None:
                    request.transport.close()
                return refused
            recorder.record(
                RecordedRequest(
                    request.method,
                    request.path,
                    dict(request.query),
                    request.headers,
                    body,
                    time.time(),
                )
            )
            return await self._answer(request)
        finally:
            recorder.ended()

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"}, text="GET or HEAD\n")
        try:
            q = parse_faults(request.query) if self.faults else _NO_FAULTS
        except ValueError as exc:
            return web.Response(status=400, text=f"bad fault parameter: {exc}\n")
        nth = self._count(request.path_qs) if q.counted else 1
        delay = q.delay if q.delay is not None else self.delay
        if delay > 0:
            await asyncio.sleep(delay)

        if q.status is not None and q.status != 200:
            response = error_response(q.status)
            if q.retry_after is not None:
                response.headers["Retry-After"] = f"{q.retry_after:g}"
            return response
        if q.fail >= nth:
            response = error_response(q.fail_status)
            if q.retry_after is not None:
                response.headers["Retry-After"] = f"{q.retry_after:g}"
            return response
        if redirect := _redirect_target(request, q):
            return web.Response(status=q.redirect_status, headers={"Location": redirect})

        if not request.path.startswith("/"):
            return web.Response(status=400, text="bad path: not absolute\n")
        name = request.path[1:]
        if self.listing and self._folder is not None and (name == "" or name.endswith("/")):
            return self._index(request.path, name)
        source = self._sources.get(name)
        opened: Opened | None = None
        if source is None:
            try:
                opened = self._open(name)
            except BadPathError as exc:
                return web.Response(status=400, text=f"bad path: {exc}\n")
            if opened is None:
                return error_response(404)
            if q == _NO_FAULTS:
                # By the book, with sendfile: aiohttp's FileResponse, with the
                # Range and If-Range rules it lacks applied in front.
                return await file_response(request, name, opened)
            info = opened.stat
            source = _Source(info.st_size, "", file_etag(info), info.st_mtime, fd=opened.fd)
        stream = web.StreamResponse()
        try:
            # ``times`` counts the requests that get the file, after the ``fail``s.
            return await self._send(request, source, q, nth - q.fail, stream)
        except ConnectionResetError:
            # The client hung up (it skipped the file, or gave up): normal.
            return stream
        finally:
            if opened is not None:
                os.close(opened.fd)

    async def _send(
        self,
        request: web.BaseRequest,
        source: _Source,
        q: Faults,
        nth: int,
        response: web.StreamResponse,
    ) -> web.StreamResponse:
        start, end, status = 0, source.size, 200
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        last_modified = email.utils.formatdate(source.mtime, usegmt=True)
        if not q.novalidator and not_modified(request, source.etag, source.mtime):
            return web.Response(
                status=304, headers={"ETag": source.etag, "Last-Modified": last_modified}
            )
        if range_header and not q.norange:
            fresh = if_range is None or if_range in (source.etag, last_modified)
            parsed = parse_range(range_header, source.size)
            if parsed == "unsatisfiable" and fresh:
                response = error_response(416)
                response.headers["Content-Range"] = f"bytes */{source.size}"
                return response
            if isinstance(parsed, tuple) and fresh:
                start, end = parsed
                status = 206
                if q.badrange:
                    start = 0

        response.set_status(status)
        headers = response.headers
        headers["Content-Type"] = source.content_type
        if source.headers:
            headers.update(source.headers)
        headers["Accept-Ranges"] = "none" if q.norange else "bytes"
        if not q.novalidator:
            headers["ETag"] = source.etag
            headers["Last-Modified"] = last_modified
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{source.size}"
        if q.cd is not None:
            headers["Content-Disposition"] = q.cd
        if q.gzip:
            headers["Content-Encoding"] = "gzip"
        if q.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = end - start
        await response.prepare(request)
        if request.method == "HEAD":
            return response

        applies = q.times is None or nth <= q.times
        cut = q.truncate if applies else None
        stall = q.stall if applies else None
        limit = min(x for x in (cut, stall, end - start) if x is not None)
        drip = q.drip
        piece = q.drip_size if drip else _READ_SIZE
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
            # Until the client gives up (handler_cancellation), or MAX_DELAY.
            await asyncio.sleep(MAX_DELAY)
        if cut is not None or stall is not None or sent < limit:
            # Body ends early (asked for, or the file shrank while it was sent):
            # the connection must not carry another response after fewer bytes
            # than announced, or the client reads that response as body.
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response


_NO_FAULTS = Faults()


def _redirect_target(request: web.BaseRequest, q: Faults) -> str | None:
    if q.location is not None:
        return q.location
    if q.loop:
        return str(request.rel_url)
    hops = q.redirect
    if hops > 0:
        rest = {k: v for k, v in request.query.items() if k != "redirect"}
        if hops > 1:
            rest["redirect"] = str(hops - 1)
        return request.path + ("?" + urlencode(rest) if rest else "")
    return None


def _tls_contexts(server: FileServer, host: str) -> ssl.SSLContext:
    """A throwaway CA and certificate; the client side goes on ``server``."""
    try:
        import trustme
    except ImportError:
        raise RuntimeError(
            "serve_files(tls=True) needs trustme: pip install trustme (or 'asyncconc[test]')"
        ) from None
    ca = trustme.CA()
    certificate = ca.issue_cert(host, "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server.ssl_context = client_context
    server.ca_pem = ca.cert_pem.bytes()
    return server_context


@contextlib.asynccontextmanager
async def serve_files(
    root: str | os.PathLike[str] | None = None,
    *,
    files: Mapping[str, bytes] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    delay: float = 0.0,
    history: int | None = DEFAULT_HISTORY,
    tls: bool = False,
    faults: bool = True,
    listing: bool = False,
    idle_timeout: float = 75.0,
    header_timeout: float = 10.0,
    send_timeout: float = 60.0,
    max_field_size: int = 8190,
    max_headers: int = 100,
    reuse_port: bool = False,
    max_connections: int = 512,
    sock: socket.socket | None = None,
) -> AsyncIterator[FileServer]:
    """Serve ``root`` (a folder) and ``files`` (name -> bytes) on ``host:port``.

    The server listens before this yields and is closed (connections
    dropped) when the block exits, also on cancellation. ``history`` is how
    many requests :attr:`FileServer.requests` keeps (``0``: none; ``None``:
    all, for short tests only). ``tls=True`` serves HTTPS with a
    certificate for ``host`` (and ``localhost``) from a throwaway CA made
    with ``trustme``; :attr:`FileServer.ssl_context` trusts that CA only.
    ``listing=True`` answers a folder's URL (``/``, ``/sub/``) with an HTML
    index (names escaped; symlinks left out). ``faults=False`` ignores the
    query string (no fault routes): what ``python -m asyncconc serve`` does
    unless ``--faults`` is given.

    Limits (:mod:`asyncconc.testing._limits`): a connection with no complete
    request for ``idle_timeout`` seconds since it was made or since its last
    response is closed (silent sockets, idle keep-alive connections); a
    request whose headers (or body) are not complete ``header_timeout``
    seconds after its first byte gets 408 and the connection is closed
    (slowloris); a connection whose client has acknowledged no byte for
    ``send_timeout`` seconds while a response waits to go out is aborted
    (a client that stopped reading); 0 turns either of the last two off. A
    request line or header line longer than ``max_field_size`` bytes, or
    more than ``max_headers`` headers, is refused with 400/431 before any
    handler runs, so no request can hold more than about
    ``max_field_size * max_headers`` bytes of headers.

    At most ``max_connections`` connections are open at once (and never more
    than the descriptor limit less 64); one more is closed on arrival.

    ``reuse_port=True`` binds with ``SO_REUSEPORT``. ``sock``: serve on this
    socket, already bound and listening (``serve --workers``: one socket
    shared by every worker), instead of binding ``host:port``.

    ``root`` is opened once, here (a relative path means the current folder
    now); files under it are opened without following symlinks, so nothing
    outside it is ever served (see :mod:`asyncconc.testing._static`).
    """
    folder = Folder(root) if root is not None else None
    server = FileServer(
        host=host,
        root=folder.path if folder is not None else None,
        delay=delay,
        header_timeout=header_timeout,
        history=history,
        faults=faults,
        listing=listing,
    )
    server._folder = folder
    try:
        server_context = _tls_contexts(server, host) if tls else None
        for name, data in (files or {}).items():
            server.add_bytes(name, data)
        # aiohttp's low-level server (no router: one handler takes every path),
        # with the limits aiohttp lacks (see ``_limits``).
        # handler_cancellation: a handler whose client hung up is cancelled, so
        # a ``stall``/``delay`` response ends "when the client gives up" instead
        # of lingering until shutdown (a long-lived server would pile them up).
        low_level = LimitedServer(
            server._handle,
            header_timeout=header_timeout,
            send_timeout=send_timeout,
            max_connections=max_connections,
            access_log=None,
            handler_cancellation=True,
            # aiohttp arms this timer when a connection is made and again after
            # each response; it closes a connection still waiting for a whole
            # request when it fires (its default is 3,630 s).
            keepalive_timeout=idle_timeout,
            max_line_size=max_field_size,
            max_field_size=max_field_size,
            max_headers=max_headers,
        )
        runner = web.ServerRunner(low_level, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site: web.BaseSite
            if sock is not None:
                site = web.SockSite(runner, sock, ssl_context=server_context)
            else:
                site = web.TCPSite(
                    runner, host, port, ssl_context=server_context, reuse_port=reuse_port or None
                )
            await site.start()
            assert site._server is not None
            sockets = getattr(site._server, "sockets", None) or []
            server.port = sockets[0].getsockname()[1]
            yield server
        finally:
            await runner.cleanup()
    finally:
        if folder is not None:
            folder.close()
