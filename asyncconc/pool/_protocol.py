"""Frames between a pool and its workers, over one non-blocking socket each.

A frame is a 13-byte header (payload length, id, kind) and a payload. Job and
result payloads are pickles (protocol 5): :func:`dumps` returns the pickle
and any out-of-band buffers as separate pieces, and :class:`Channel` hands
the pieces to the kernel with one ``sendmsg`` (scatter/gather), so a large
argument or result is never concatenated into a second copy. A large frame
is received with ``recv_into`` straight into a buffer of its exact size,
which :func:`loads` unpickles in place (out-of-band buffers are views of it).

Each job is pickled on its own, so an unpicklable argument fails exactly one
task; many frames queued in one event-loop iteration leave in one system
call, which is how thousands of one-task ``submit`` calls share it.

:class:`Channel` is used on both sides. It reads with ``loop.add_reader`` and
writes with ``sendmsg`` plus ``add_writer`` when the socket is full, so
neither side ever blocks its event loop on the other. It is plain callbacks
(no transports) so that a worker can be attached from a synchronous callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CANCEL",
    "CANCELLED",
    "CONFIG",
    "ERR_PICKLING",
    "ERR_RAISED",
    "HEADER",
    "INIT_FAILED",
    "JOB",
    "PROGRESS",
    "READY",
    "RESULT",
    "STARTED",
    "STOP",
    "Channel",
    "Frame",
    "Pieces",
    "dumps",
    "encode",
    "loads",
    "tune",
]

HEADER = struct.Struct("<IQB")

# Pool -> worker.
JOB = 1  # id = job id, payload = dumps((fn, arglist, kwargs, timeout, star))
CANCEL = 2  # id = job id, no payload
STOP = 3  # finish what you hold, then exit
CONFIG = 4  # the first frame: dumps(WorkerConfig)
# Worker -> pool.
RESULT = 11  # id = job id, payload = dumps((results, error | None, elapsed))
CANCELLED = 12  # id = job id: it was dropped or cancelled, no result follows
READY = 13  # the initializer has run; payload = pid as text
INIT_FAILED = 14  # payload = pickle of (exception bytes, remote traceback text)
STARTED = 15  # id = job id: the worker has started running this job
PROGRESS = 16  # id = job id: a call of this plain-function job just finished

# The first item of a result's ``error``.
ERR_RAISED = 0  # (ERR_RAISED, pickled exception, traceback text)
ERR_PICKLING = 1  # (ERR_PICKLING, message, "")

Frame = tuple[int, int, "bytes | memoryview"]
Pieces = Sequence["bytes | memoryview"]

_READ_SIZE = 1 << 18
# Frames at least this long are read into their own buffer with recv_into.
_BIG_FRAME = 1 << 16
# Bigger socket buffers mean fewer wake-ups per megabyte (the kernel caps
# the request at net.core.[rw]mem_max; 4 MiB on the machines measured).
_SOCKET_BUFFER = 4 << 20
_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")
_MAX_PIECES = 512  # below IOV_MAX (1024 on Linux)


def tune(sock: socket.socket) -> None:
    """Ask for large kernel buffers on a pool socket."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):  # refused: keep the default
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)


def dumps(obj: object) -> list[bytes | memoryview]:
    """``obj`` pickled (protocol 5) as pieces: counts, pickle, raw buffers.

    Raises what :func:`pickle.dumps` raises.
    """
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    if not buffers:
        return [b"\0\0\0\0", meta]
    raws = [buffer.raw() for buffer in buffers]
    sizes = b"".join(_SIZE.pack(raw.nbytes) for raw in raws)
    head = _COUNT.pack(len(raws)) + _SIZE.pack(len(meta)) + sizes
    return [head, meta, *raws]


def loads(data: bytes | memoryview) -> Any:
    """The object :func:`dumps` pieces (joined) stand for."""
    view = memoryview(data)
    if data[:4] == b"\0\0\0\0":  # no out-of-band buffers: the common case
        return pickle.loads(view[4:])
    (count,) = _COUNT.unpack_from(view, 0)
    pos = _COUNT.size
    (meta_size,) = _SIZE.unpack_from(view, pos)
    pos += _SIZE.size
    sizes = [_SIZE.unpack_from(view, pos + i * _SIZE.size)[0] for i in range(count)]
    pos += count * _SIZE.size
    meta = view[pos : pos + meta_size]
    pos += meta_size
    buffers = []
    for size in sizes:
        buffers.append(view[pos : pos + size])
        pos += size
    return pickle.loads(meta, buffers=buffers)


def encode(kind: int, ident: int, payload: bytes | Pieces = b"") -> list[bytes | memoryview]:
    """A frame as pieces to send: the header, then the payload's pieces."""
    if isinstance(payload, bytes | bytearray | memoryview):
        if not payload:
            return [HEADER.pack(0, ident, kind)]
        return [HEADER.pack(len(payload), ident, kind), payload]
    # Every piece is bytes or a 1-D byte view (PickleBuffer.raw()): len() is its size.
    return [HEADER.pack(sum(map(len, payload)), ident, kind), *payload]


class Channel:
    """Framed messages over a connected stream socket, driven by a loop.

    ``on_frames`` gets every complete frame of one read at once; ``on_eof``
    is called once when the peer has gone (EOF or a reset). After
    :meth:`close` neither is called again. Not thread-safe: use it from the
    loop's thread only.
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
        # A large frame being read into its own buffer: (kind, ident, buffer, bytes in).
        self._big: tuple[int, int, bytearray] | None = None
        self._big_got = 0
        self._outbox: deque[memoryview] = deque()
        self._flush_scheduled = False
        self._writing = False
        self._closed = False
        self._eof = False
        self._drained: asyncio.Future[None] | None = None
        loop.add_reader(self._fd, self._on_readable)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, pieces: Pieces) -> None:
        """Queue a frame; it leaves with the others at the end of this loop turn."""
        if self._closed:
            return
        append = self._outbox.append
        for piece in pieces:
            if piece:
                append(memoryview(piece))
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
        if self._closed:
            return
        self._write()

    def _write(self) -> None:
        """Send until the outbox is empty or the socket is full."""
        outbox = self._outbox
        while outbox:
            pieces = [outbox[i] for i in range(min(len(outbox), _MAX_PIECES))]
            wanted = sum(piece.nbytes for piece in pieces)
            try:
                sent = self._sock.sendmsg(pieces)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # The peer is gone; the reader sees EOF and reports it.
                outbox.clear()
                break
            left = sent
            while left and outbox:
                head = outbox[0]
                if head.nbytes <= left:
                    left -= head.nbytes
                    outbox.popleft()
                else:
                    outbox[0] = head[left:]
                    left = 0
            if sent < wanted:
                break  # the kernel buffer is full: wait until writable
        if outbox:
            if not self._writing:
                self._writing = True
                self._loop.add_writer(self._fd, self._on_writable)
            return
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _on_writable(self) -> None:
        if not self._closed:
            self._write()

    def read_pending(self) -> None:
        """Deliver every frame already received, now.

        The pool calls this when a worker's process has exited, before
        deciding which of its jobs died with it: results the worker sent just
        before the end may still sit in the socket buffer.
        """
        while not self._closed and not self._eof and self._read_once():
            pass

    def _on_readable(self) -> None:
        # Read what is there (bounded), so a large frame needs few wake-ups.
        for _ in range(64):
            if self._closed or self._eof or not self._read_once():
                return

    def _read_once(self) -> bool:
        if self._big is not None:
            return self._read_big()
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self._gone()
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
                if length >= _BIG_FRAME:
                    # Read the rest straight into a buffer of the frame's size.
                    buffer = bytearray(length)
                    have = end_of_data - pos - size
                    buffer[:have] = memoryview(inbox)[pos + size : end_of_data]
                    self._big = (kind, ident, buffer)
                    self._big_got = have
                    pos = end_of_data
                break
            frames.append((kind, ident, bytes(inbox[pos + size : end])))
            pos = end
        if pos:
            del inbox[:pos]
        if frames:
            self._on_frames(frames)
        return True

    def _read_big(self) -> bool:
        assert self._big is not None
        kind, ident, buffer = self._big
        view = memoryview(buffer)
        try:
            got = self._sock.recv_into(view[self._big_got :])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            got = 0
        if not got:
            self._gone()
            return False
        self._big_got += got
        if self._big_got == len(buffer):
            self._big = None
            self._on_frames([(kind, ident, view)])
        return True

    def _gone(self) -> None:
        self._eof = True
        self._loop.remove_reader(self._fd)
        self._on_eof()
