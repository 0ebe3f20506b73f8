"""asyncconc's own receive path for plain ``http://`` GETs.

aiohttp's client costs about half of what a small file or a byte of a large
one costs the downloader (measured: ``benchmarks/raw_client.py`` beside the
aiohttp floor client, docs/benchmarks-download.md). Most of it is the
receive path: a ``bytes`` per read of the socket, the body piece cut out of
it again by the parser, a stream reader with its futures per piece, and a
response object built for every use. For the common case, a GET to a plain
``http://`` URL through a session the downloader owns, this module takes
the request instead:

* :class:`Connections` keeps HTTP/1.1 keep-alive connections per
  ``(host, port)``; each is a :class:`asyncio.BufferedProtocol` that reads
  the socket into a buffer of its own, so a body piece is a ``memoryview``
  of that buffer, written to the file as it is (no copy). A buffer is
  filled once, front to back, and never rewritten: pieces handed out stay
  valid however long the writer keeps them, and a full buffer is replaced
  by a fresh one.
* The response head is parsed by ``httptools`` (llhttp, the parser aiohttp
  vendors too); only its end is found here. A ``Content-Length`` body needs
  no parser: its bytes are counted. A chunked or close-delimited body goes
  through the same parser.
* :class:`Answer` offers what :mod:`._fetching` reads of an aiohttp
  response: ``status``, ``reason``, ``headers``, ``content_length``,
  ``url``, :meth:`Answer.release` and the body as :meth:`Answer.pieces`.

Everything else goes through aiohttp, imported only then (it costs 0.3 s
of start-up here): ``https``, a session the caller
passed in (its proxy, cookies, auth, limits and tracing are the caller's),
and any request while the session's cookie jar holds cookies (a
``Set-Cookie`` answered here goes into that jar, so the next request sends
it through aiohttp, exactly as before). Errors are raised as
:class:`WireError` subclasses that
:func:`~asyncconc.downloader._failures.classify` words and decides exactly
as it does aiohttp's matching errors.

A reused connection that the server had closed (an idle keep-alive it
dropped) fails before the first byte of the answer; such a request is sent
again at once on a new connection, once, as curl and browsers do for a GET.

A large ``Content-Length`` body can leave the loop: :meth:`Answer.detach_body`
stops the transport reading and hands the rest of the body to a
:class:`DetachedBody`, which a thread reads from a duplicate of the socket's
descriptor straight into a buffer of its own and writes from it at once
(:meth:`~asyncconc.downloader._writing.PartFile.receive`). Per byte that is
what a plain threaded client costs: the buffer is reused while still in the
CPU's cache, where the loop path hands each piece of a fresh buffer to a
writer thread later (``benchmarks/download.py`` tool ``sock-threads``, and
docs/benchmarks-download.md, issue 8, tenth session). The connection goes
back to the pool when the body was read to its end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from asyncconc import __version__

__all__ = [
    "USER_AGENT",
    "Answer",
    "BodyCut",
    "ConnectFailure",
    "ConnectTimeout",
    "Connections",
    "DetachedBody",
    "InvalidAnswer",
    "ServerClosed",
    "WireError",
    "usable",
]

BUFFER = 256 * 1024
# A buffer with less room than this left is replaced before the next read.
MIN_ROOM = 32 * 1024
# The most a head may take (aiohttp's own limit is 8190 bytes per line).
MAX_HEAD = 64 * 1024
# Received and not yet taken by the reader: reading pauses above HIGH and
# resumes once the reader has taken everything.
HIGH_WATER = 1 << 20
# Idle connections kept per (host, port), and for how long (aiohttp's
# defaults: 15 s keep-alive).
MAX_IDLE = 100
KEEPALIVE = 15.0
_HEAD_END = b"\r\n\r\n"
_NO_BODY_STATUSES = frozenset({204, 304})
# The downloader's own sessions say who asks, on both paths.
USER_AGENT = f"asyncconc/{__version__}"
_DEFAULT_HEADERS = (("Accept", "*/*"), ("User-Agent", USER_AGENT))


class WireError(Exception):
    """A failure on this path; :func:`~._failures.classify` words each kind."""


class InvalidAnswer(WireError):
    """The server's bytes are not an HTTP/1.x response (never retried)."""


class ServerClosed(WireError):
    """The connection ended before the head of the answer."""


class BodyCut(WireError):
    """The connection ended (or the body broke) before the body's end."""


class ConnectTimeout(WireError, TimeoutError):
    """No TCP connection within the connect timeout."""


class ConnectFailure(WireError, OSError):
    """The TCP connection could not be made (``os_error``: why)."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(os_error.errno, os_error.strerror or str(os_error))
        self.os_error = os_error


def usable(url: str) -> bool:
    """Whether ``url`` may take this path (plain ``http://``)."""
    return url[:7].lower() == "http://"


_Piece = memoryview | bytes


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, owner: Connections, key: tuple[str, int]) -> None:
        self._owner = owner
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._buffer = bytearray(BUFFER)
        self._view = memoryview(self._buffer)
        self._fill = 0  # bytes of the buffer received
        self._head_from = 0  # where the head being gathered starts
        self._answer: Answer | None = None

    # -- protocol callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._owner._gone(self)
        if self._answer is not None:
            self._answer._on_lost(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        if BUFFER - self._fill < MIN_ROOM:
            self._fresh_buffer()
        return self._view[self._fill :]

    def buffer_updated(self, nbytes: int) -> None:
        start = self._fill
        self._fill += nbytes
        answer = self._answer
        if answer is None:
            # Bytes nobody asked for (an idle connection, or after the end
            # of an answer): this connection is not to be reused.
            self._close()
            return
        if answer._in_head:
            answer._head_data(self._buffer, self._head_from, self._fill)
        else:
            answer._body_data(self._view[start : self._fill])

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def _fresh_buffer(self) -> None:
        """A new buffer; a head being gathered moves to its front."""
        old, start, end = self._view, self._head_from, self._fill
        self._buffer = bytearray(BUFFER)
        self._view = memoryview(self._buffer)
        answer = self._answer
        keep = end - start if answer is not None and answer._in_head else 0
        if keep:
            self._view[:keep] = old[start:end]
        self._head_from, self._fill = 0, keep

    def _close(self) -> None:
        # abort, not close: nothing of ours is worth flushing (a request is
        # sent whole or not at all), and close() would wait on a peer that
        # does not read before connection_lost, which aclose() awaits.
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    # -- for Answer and Connections -------------------------------------------

    def begin(self, answer: Answer) -> None:
        self._answer = answer
        self._head_from = self._fill

    def head_consumed(self, upto: int) -> None:
        self._head_from = upto

    def end(self, reusable: bool) -> None:
        """The answer is finished with: back to the pool, or closed."""
        self._answer = None
        if self.transport is not None and self.transport.is_reading() is False:
            with contextlib.suppress(Exception):
                self.transport.resume_reading()
        if reusable and not self.lost:
            self._owner._put(self)
        else:
            self._close()


class Answer:
    """One response on a :class:`_Connection` (see the module docstring)."""

    def __init__(
        self, conn: _Connection, url: str, read_timeout: float | None, *, head_only: bool = False
    ) -> None:
        self._conn = conn
        self.url = url
        self._head_only = head_only
        self._timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.content_length: int | None = None
        self._in_head = True
        self.received_any = False  # a byte of the answer arrived
        self._parser: Any = None
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._left = -1  # Content-Length bytes still to come (-1: parsed body)
        self._complete = False
        self._keep_alive = False
        self._pieces: collections.deque[_Piece] = collections.deque()
        self._queued = 0
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False
        self._detached: DetachedBody | None = None

    # -- httptools callbacks --------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._push(body)

    def on_message_complete(self) -> None:
        if not self._in_head:
            self._finish()

    # -- from the connection --------------------------------------------------

    def _head_data(self, buffer: bytearray, start: int, fill: int) -> None:
        self.received_any = True
        view = memoryview(buffer)
        while True:
            end = buffer.find(_HEAD_END, start, fill)
            if end < 0:
                if fill - start > MAX_HEAD:
                    self._fail(InvalidAnswer(f"a response head larger than {MAX_HEAD} bytes"))
                return
            body_from = end + 4
            parser = httptools.HttpResponseParser(self)
            self._raw_headers, self._reason = [], b""
            try:
                parser.feed_data(bytes(view[start:body_from]))
            except httptools.HttpParserUpgrade:
                self._fail(InvalidAnswer("the server switched protocols"))
                return
            except httptools.HttpParserError as exc:
                self._fail(InvalidAnswer(f"an invalid response head: {exc}"))
                return
            status = parser.get_status_code()
            if 100 <= status < 200:
                start = body_from  # an interim answer (100 Continue, 103 ...)
                self._conn.head_consumed(start)
                continue
            self._conn.head_consumed(body_from)
            self._start_body(parser, status)
            if body_from < fill and not self._complete:
                self._body_data(view[body_from:fill])
            elif body_from < fill:
                self._keep_alive = False  # bytes past the answer's end
            return

    def _start_body(self, parser: Any, status: int) -> None:
        self._in_head = False
        self.status = status
        self.reason = self._reason.decode("utf-8", "surrogateescape")
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in self._raw_headers:
            headers.add(
                name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")
            )
        self.headers = CIMultiDictProxy(headers)
        self._keep_alive = bool(parser.should_keep_alive())
        length = headers.get("Content-Length")
        if length is not None:
            # llhttp refused duplicates and non-digits already.
            self.content_length = int(length)
        if status in _NO_BODY_STATUSES or self._head_only:
            self._finish()
        elif "Transfer-Encoding" not in headers and self.content_length is not None:
            self._left = self.content_length
            if self._left == 0:
                self._finish()
        else:
            self._parser = parser  # chunked, or up to the close
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _body_data(self, piece: memoryview) -> None:
        if self._complete:
            self._keep_alive = False
            return
        if self._left >= 0:
            size = len(piece)
            if size > self._left:
                # More than announced: keep what was announced, drop the
                # connection (what follows is not an answer we asked for).
                piece = piece[: self._left]
                size = self._left
                self._keep_alive = False
            self._left -= size
            self._push(piece)
            if self._left == 0:
                self._finish()
            return
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserError as exc:
            self._fail(BodyCut(f"an invalid body: {exc}"))

    def _push(self, piece: _Piece) -> None:
        if not piece:
            return
        if self._detached is not None:
            # Neither loop reads after pause_reading (asyncio cancels the
            # scheduled reader, uvloop reads only when it polls); were a read
            # to come anyway, its bytes would be out of order with the
            # thread's: the body is cut, never stitched wrong.
            self._fail(BodyCut("a read of the loop came after the body was detached"))
            self._detached.stop()
            return
        self._pieces.append(piece)
        self._queued += len(piece)
        if self._queued > HIGH_WATER and not self._paused and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None and not self._complete:
            self._error = exc
        self._keep_alive = False
        self._conn._close()
        self._wake()

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._complete:
            return
        if (
            not self._in_head
            and self._left < 0
            and self._parser is not None
            and "Transfer-Encoding" not in self.headers
        ):
            # A body that runs up to the close ends here; a chunked one
            # that stops short is an error.
            self._finish()
            return
        if self._error is None:
            if self._in_head:
                error: BaseException = ServerClosed("the connection closed before the head")
            else:
                error = BodyCut("the connection closed before the end")
            if exc is not None:
                error.__cause__ = exc
            self._error = error
        self._keep_alive = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- for the reader -------------------------------------------------------

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        timer = None
        if self._timeout is not None:
            timer = self._loop.call_later(self._timeout, _time_out, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def head(self) -> None:
        """Until the head of the answer is in (raises what ended it instead)."""
        while self._in_head:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def pieces(self) -> AsyncIterator[_Piece]:
        """The body, piece by piece, as received (each valid as long as kept)."""
        pieces = self._pieces
        while True:
            while pieces:
                piece = pieces.popleft()
                self._queued -= len(piece)
                if self._paused and not pieces:
                    self._paused = False
                    if self._conn.transport is not None and not self._conn.lost:
                        self._conn.transport.resume_reading()
                yield piece
            if self._complete:
                return
            if self._error is not None:
                raise self._error
            await self._wait()

    def body_left(self) -> int:
        """Bytes of a ``Content-Length`` body not yet received (0 for any other body)."""
        return max(self._left, 0) if not self._complete else 0

    def detach_body(self) -> DetachedBody | None:
        """Hand the rest of a ``Content-Length`` body to a thread, or ``None``.

        Only before :meth:`pieces` was iterated, for a body of announced
        length still coming on an open connection. The transport stops
        reading; the pieces already received are
        :attr:`DetachedBody.queued`, to be written first.
        """
        conn, transport = self._conn, self._conn.transport
        if self._in_head or self._complete or self._error is not None or self._left <= 0:
            return None
        if transport is None or conn.lost or self._detached is not None:
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return None
        transport.pause_reading()
        self._paused = True
        queued = list(self._pieces)
        self._pieces.clear()
        self._queued = 0
        self._detached = DetachedBody(self, dup, queued, self._left)
        return self._detached

    def release(self) -> None:
        """Done with this answer: the connection is reused if it was read to the end."""
        if self._released:
            return
        self._released = True
        if self._detached is not None:
            self._detached.end()
        self._pieces.clear()
        self._conn.end(self._complete and self._keep_alive and self._error is None)


class DetachedBody:
    """The rest of a ``Content-Length`` body, read by a thread (see :meth:`Answer.detach_body`).

    :meth:`read_into` runs in that one thread; :meth:`stop` and :meth:`end`
    on the loop. The thread reads a duplicate descriptor of the connection's
    socket (still non-blocking: the loop shares its file status), so the
    transport's own descriptor and state are untouched, and the read timeout
    is the answer's: the longest wait for the next byte.
    """

    # A wait without a read timeout still wakes this often to see stop().
    _POLL = 60.0

    def __init__(self, answer: Answer, sock: socket.socket, queued: list[_Piece], left: int):
        self._answer = answer
        self._sock = sock
        self._timeout = answer._timeout
        sock.settimeout(self._POLL if self._timeout is None else self._timeout)
        self.queued = queued
        self.left = left  # body bytes the thread has still to read
        self._stopped = False
        # Between the thread and the loop: whether a read is in progress, and
        # whether end() came (then the last of the two closes the socket).
        self._lock = threading.Lock()
        self._reading = False
        self._closing = False

    def read_into(self, buffer: memoryview) -> int:
        """Read the next body bytes into ``buffer`` (in the thread): 0 at the body's end.

        Raises what ended the body early.
        """
        if self.left == 0:
            return 0
        with self._lock:
            if self._stopped or self._closing:
                raise BodyCut("the download was stopped before the end")
            self._reading = True
        try:
            n = self._recv(buffer[: self.left])
        finally:
            self._read_over()
        self.left -= n
        return n

    def _read_over(self) -> None:
        with self._lock:
            self._reading = False
            if self._closing:  # end() came meanwhile: closing is ours
                self._sock.close()

    def _recv(self, buffer: memoryview) -> int:
        while True:
            error: BaseException
            try:
                n = self._sock.recv_into(buffer)
            except TimeoutError:
                if self._timeout is None and not self._stopped:
                    continue
                error = TimeoutError(f"no data for {self._timeout} s")
            except OSError as exc:
                error = BodyCut(f"the connection failed before the end: {exc}")
                error.__cause__ = exc
            else:
                if n:
                    return n
                error = BodyCut("the connection closed before the end")
            if self._stopped:
                error = BodyCut("the download was stopped before the end")
            raise error

    def stop(self) -> None:
        """Make a :meth:`read_into` waiting in the thread return soon (on the loop)."""
        with self._lock:
            self._stopped = True
            if not self._closing:
                self._wake()

    def _wake(self) -> None:
        # Only while the socket is open (the lock is held): its descriptor
        # number, maybe reused once closed, is never touched.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RD)

    def end(self) -> None:
        """The answer is released: settle it, and close the socket (on the loop).

        Normally the thread is done by now. If it is still reading (a
        cancelled download whose cleanup runs later), it is woken and closes
        the socket itself once its read returns, so that no descriptor is
        closed under a read in progress.
        """
        if self._closing:
            return
        with self._lock:
            self._closing = True
            if self._reading:
                self._stopped = True
                self._wake()
            else:
                self._sock.close()
        answer = self._answer
        if self.left == 0 and not self._stopped:
            answer._left = 0
            answer._finish()
        else:
            answer._fail(BodyCut("the connection closed before the end"))


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connections:
    """Keep-alive connections by ``(host, port)``, and the GETs sent on them."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()  # connected, not yet lost
        self._all_gone: asyncio.Event | None = None
        self._closed = False

    async def get(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
        method: str = "GET",
        sent: Callable[[], None] | None = None,
    ) -> Answer:
        """Send a GET (or HEAD) for ``url`` and wait for the head of the answer.

        ``sent`` is called each time the request has been handed to the
        socket, before waiting: work to do while the server answers.

        Raises ``ValueError`` for a header that cannot be sent, and what
        :func:`~asyncconc.downloader._failures.classify` knows for the rest.
        """
        parsed = URL(url)
        host = parsed.raw_host
        if not host:
            raise InvalidAnswer(f"no host in {url!r}")
        key = (host, parsed.port or 80)
        request = _request_bytes(method, parsed, headers)
        for _ in range(2):
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, connect_timeout)
            answer = Answer(conn, url, read_timeout, head_only=method == "HEAD")
            conn.begin(answer)
            assert conn.transport is not None
            conn.transport.write(request)
            try:
                if sent is not None:
                    sent()
                await answer.head()
            except (ServerClosed, ConnectionResetError):
                answer.release()
                if reused and not answer.received_any:
                    continue  # a keep-alive the server had dropped: once more
                raise
            except BaseException:
                answer.release()
                raise
            return answer
        raise ServerClosed("the connection closed before the head")

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            if not conn.lost and now - conn.idle_since < KEEPALIVE:
                return conn
            conn._close()
        return None

    def _put(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if self._closed or len(idle) >= MAX_IDLE:
            conn._close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                # (uvloop takes no happy_eyeballs_delay: addresses in turn.)
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key), key[0], key[1]
                )
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {key[0]}:{key[1]} within {timeout} s") from exc
        except socket.gaierror:
            raise
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise
            raise ConnectFailure(exc) from exc
        if self._closed:  # closed while connecting
            conn._close()
            raise ServerClosed("the downloader closed")
        self._open.add(conn)
        return conn

    def _gone(self, conn: _Connection) -> None:
        self._open.discard(conn)
        if not self._open and self._all_gone is not None:
            self._all_gone.set()

    async def aclose(self) -> None:
        """Close every connection and wait until each is closed (idempotent).

        A connection in use is closed too: its answer ends with an error.
        """
        self._closed = True
        self._idle.clear()
        if not self._open:
            return
        self._all_gone = asyncio.Event()
        for conn in list(self._open):
            conn._close()
        await self._all_gone.wait()


def _request_bytes(method: str, url: URL, headers: Mapping[str, str]) -> bytes:
    """The request head, as aiohttp would send it (header names and defaults)."""
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1"]
    given = {name.lower() for name in headers}
    if "host" not in given:
        lines.append(f"Host: {url.host_port_subcomponent}")
    for name, value in _DEFAULT_HEADERS:
        if name.lower() not in given:
            lines.append(f"{name}: {value}")
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
            raise ValueError(f"the header {name!r} holds a line break or a colon")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8")
