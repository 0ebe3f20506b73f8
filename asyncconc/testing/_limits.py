"""Per-connection limits aiohttp's server lacks: header deadline, send timeout, cap.

aiohttp (3.14) has one timer per connection, ``keepalive_timeout``: armed when
the connection is made and after each response, it closes a connection that
has no complete request when it fires. That is the idle timeout. It has no
deadline for reading a request's headers once they have begun (its old
``slow_request_timeout`` is gone) and no timeout for sending (a client that
stops reading holds the connection, its file and a descriptor forever:
``sendfile`` and ``drain()`` wait for writability without end). So:

* **Header deadline.** The first byte of a request that arrives while the
  connection waits for one arms a timer of ``header_timeout`` seconds; the
  complete headers disarm it. When it fires the client gets
  ``408 Request Timeout`` and the connection is closed: a slowloris client
  (one byte per 100 ms, never finishing) is cut after ``header_timeout``,
  whatever the idle timeout. A complete request in one read (every normal
  client) never arms it.
* **Send timeout.** Every second the server looks at the connections with
  bytes waiting to go out (in the transport's buffer or the kernel's send
  queue, ``SIOCOUTQ``) and at how many bytes the peer has acknowledged
  (``TCP_INFO`` ``tcpi_bytes_acked``). A connection whose peer acknowledged
  nothing new for ``send_timeout`` seconds while bytes wait is aborted (as
  nginx's ``send_timeout``: between two successive writes, not for the whole
  response), which ends the handler and closes the file it was sending. This
  works under any event loop and any way of sending (``sendfile``, copies).
* **Connection cap.** One more connection than ``max_connections`` is closed
  on arrival (never more than the descriptor limit less 64).
"""

from __future__ import annotations

import asyncio
import fcntl
import resource
import socket
import struct
import termios
from typing import Any

from aiohttp import web

__all__ = ["LimitedServer"]

_TCPI_BYTES_ACKED = 120  # offset of the u64 tcpi_bytes_acked in struct tcp_info (Linux 4.2+)
_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class _Connection(web.RequestHandler):
    """aiohttp's connection handler plus the header deadline."""

    __slots__ = ("_header_timer",)

    def __init__(self, manager: LimitedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages:  # the headers are complete
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
        elif data and self._header_timer is None and not self._request_in_progress:
            manager = self._manager
            if isinstance(manager, LimitedServer) and manager.header_timeout > 0:
                self._header_timer = self._loop.call_later(
                    manager.header_timeout, self._header_deadline
                )

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self._messages or self._request_in_progress or self.transport is None:
            # A request is being answered: after it, the idle timeout bounds
            # whatever part of the next one has come.
            return
        self.transport.write(_TIMEOUT_408)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)


class LimitedServer(web.Server):
    """aiohttp's low-level server with the limits of the module doc.

    ``header_timeout`` / ``send_timeout``: seconds, 0 for none.
    """

    def __init__(
        self,
        handler: Any,
        *,
        header_timeout: float,
        send_timeout: float,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            max_connections = max(1, min(max_connections, soft - 64))
        self.max_connections = max_connections
        self._watch: asyncio.TimerHandle | None = None
        # transport -> (bytes acknowledged, loop time it last changed)
        self._progress: dict[asyncio.Transport, tuple[int, float]] = {}

    def __call__(self) -> web.RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) > self.max_connections:
            transport.abort()
            return
        if self.send_timeout > 0 and self._watch is None:
            self._watch = self._loop.call_later(self._interval(), self._check_sends)

    def _interval(self) -> float:
        return min(1.0, self.send_timeout / 4)

    def _check_sends(self) -> None:
        """Abort the connections whose peer has stopped taking bytes."""
        self._watch = None
        now = self._loop.time()
        progress: dict[asyncio.Transport, tuple[int, float]] = {}
        for transport in list(self._connections.values()):  # abort() may change it
            if transport.is_closing():
                continue
            acked = _stuck_marker(transport)
            if acked is None:
                continue  # nothing waits to go out: not sending, or idle
            before = self._progress.get(transport)
            if before is None or before[0] != acked:
                progress[transport] = (acked, now)
            elif now - before[1] >= self.send_timeout:
                transport.abort()
            else:
                progress[transport] = before
        self._progress = progress
        if self._connections:
            self._watch = self._loop.call_later(self._interval(), self._check_sends)

    def pre_shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().pre_shutdown()


def _stuck_marker(transport: asyncio.Transport) -> int | None:
    """Bytes the peer acknowledged so far, or ``None`` when nothing waits to go out."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        fd = sock.fileno()
        queued = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        if queued == 0 and transport.get_write_buffer_size() == 0:
            return None
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(info) >= _TCPI_BYTES_ACKED + 8:
        return int(struct.unpack_from("Q", info, _TCPI_BYTES_ACKED)[0])
    return int(queued)  # an old kernel: a send queue that does not move
