"""Frames between a pool and its workers, over one non-blocking socket each.

A frame is a 13-byte header (payload length, id, kind) and a pickle payload.
Each job is pickled on its own, so an unpicklable argument fails exactly one
task; many frames queued in one event-loop iteration leave in one ``send``,
which is how thousands of one-task ``submit`` calls share a system call.

:class:`Channel` is used on both sides. It reads with ``loop.add_reader`` and
writes with ``send`` plus ``add_writer`` when the socket is full, so neither
side ever blocks its event loop on the other and no thread is needed. It is
plain callbacks (no transports) so that a worker can be attached from a
synchronous callback, e.g. while replacing a crashed one.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

__all__ = [
    "CANCEL",
    "CANCELLED",
    "ERR_PICKLING",
    "ERR_RAISED",
    "INIT_FAILED",
    "JOB",
    "READY",
    "RESULT",
    "STARTED",
    "STOP",
    "Channel",
    "Frame",
    "encode",
]

HEADER = struct.Struct("<IQB")

# Pool -> worker.
JOB = 1  # id = job id, payload = pickle of (fn, arglist, kwargs, timeout, star)
CANCEL = 2  # id = job id, no payload
STOP = 3  # finish what you hold, then exit
# Worker -> pool.
RESULT = 11  # id = job id, payload = pickle of (results, error | None, elapsed)
CANCELLED = 12  # id = job id: it was dropped or cancelled, no result follows
READY = 13  # the initializer has run; payload = pid as text
INIT_FAILED = 14  # payload = pickle of (exception bytes, remote traceback text)
STARTED = 15  # id = job id: a plain-function job with a timeout starts now

# The first item of a result's ``error``.
ERR_RAISED = 0  # (ERR_RAISED, pickled exception, traceback text)
ERR_PICKLING = 1  # (ERR_PICKLING, message, "")

Frame = tuple[int, int, bytes]

_READ_SIZE = 1 << 18


def encode(kind: int, ident: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), ident, kind) + payload


class Channel:
    """Framed messages over a connected stream socket, driven by a loop.

    ``on_frames`` gets every complete frame of one read at once; ``on_eof``
    is called once when the peer has gone (EOF or a reset). After
    :meth:`close` neither is called again.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_frames: Callable[[list[Frame]], None],
        on_eof: Callable[[], None],
    ) -> None:
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._on_frames = on_frames
        self._on_eof = on_eof
        self._inbox = bytearray()
        self._outbox: list[bytes] = []
        self._tail = memoryview(b"")
        self._flush_scheduled = False
        self._writing = False
        self._closed = False
        self._eof = False
        self._drained: asyncio.Future[None] | None = None
        loop.add_reader(self._fd, self._on_readable)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, frame: bytes) -> None:
        """Queue a frame; it leaves with the others at the end of this loop turn."""
        if self._closed:
            return
        self._outbox.append(frame)
        if not self._flush_scheduled and not self._writing:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def flush_now(self) -> None:
        """Send what is queued without waiting for the end of the loop turn."""
        if not self._writing:
            self._flush()

    async def drain(self) -> None:
        """Wait until everything queued has been handed to the kernel."""
        self.flush_now()
        if self._writing and not self._closed:
            self._drained = self._loop.create_future()
            await self._drained

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._eof:
            self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        self._outbox.clear()
        self._sock.close()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or not self._outbox:
            return
        data = self._outbox[0] if len(self._outbox) == 1 else b"".join(self._outbox)
        self._outbox.clear()
        self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # The peer is gone; the reader sees EOF and reports it.
            self._outbox.clear()
            return
        if sent < len(data):
            # A memoryview, so the rest is sliced without copying: a 100 MB
            # result would otherwise be copied once per send.
            self._tail = memoryview(data)[sent:]
            if not self._writing:
                self._writing = True
                self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        if not self._tail:
            self._tail = memoryview(b"".join(self._outbox))
            self._outbox.clear()
        try:
            sent = self._sock.send(self._tail)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(self._tail)
            self._outbox.clear()
        self._tail = self._tail[sent:]
        if self._tail or self._outbox:
            return
        self._writing = False
        self._loop.remove_writer(self._fd)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def read_pending(self) -> None:
        """Deliver every frame already received, now.

        The pool calls this when a worker's process has exited, before
        deciding which of its jobs died with it: results the worker sent just
        before the end may still sit in the socket buffer.
        """
        while not self._closed and not self._eof and self._read_once():
            pass

    def _on_readable(self) -> None:
        self._read_once()

    def _read_once(self) -> bool:
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self._eof = True
            self._loop.remove_reader(self._fd)
            self._on_eof()
            return False
        inbox = self._inbox
        inbox += data
        frames: list[Frame] = []
        size = HEADER.size
        pos = 0
        end_of_data = len(inbox)
        while end_of_data - pos >= size:
            length, ident, kind = HEADER.unpack_from(inbox, pos)
            end = pos + size + length
            if end > end_of_data:
                break
            frames.append((kind, ident, bytes(inbox[pos + size : end])))
            pos = end
        if pos:
            del inbox[:pos]
        if frames:
            self._on_frames(frames)
        return True
