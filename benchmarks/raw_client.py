"""The "raw" client: what a lower-level receive path could reach, for comparison only.

``python benchmarks/raw_client.py URLS DIR -j N`` (URLS: ``URL NAME`` lines,
plain ``http://`` to one host) downloads every URL with N keep-alive
connections on uvloop, each an :class:`asyncio.BufferedProtocol`: the socket
is read into one preallocated buffer per connection and every body piece is
written from that buffer with ``os.write`` (no ``bytes`` per read, no parser
copy, no stream queue), to ``NAME.part`` renamed to ``NAME`` when the length
matches. Only ``200`` answers with a ``Content-Length`` are understood; no
chunked bodies, redirects, TLS, retries or names.

Not part of asyncconc: the issue-8 benchmark runs it beside the aiohttp
floor client to measure how much of the remaining gap to curl and wget2 is
aiohttp's receive path (its ``bytes`` per read of the socket, the body piece
cut out of it by the parser, the StreamReader) rather than asyncconc's own
work. Exit 1 if any download failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

BUFFER = 256 * 1024
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; :meth:`fetch` one answer at a time."""

    def __init__(self) -> None:
        self._buffer = bytearray(BUFFER)
        self._view = memoryview(self._buffer)
        self._filled = 0  # bytes of the head gathered so far
        self._in_body = False
        self._left = 0  # body bytes still to come
        self._fd = -1
        self._done: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError(f"connection lost: {exc}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._in_body:
            return self._view
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._in_body:
            self._write(self._view[:nbytes])
            return
        self._filled += nbytes
        end = self._buffer.find(b"\r\n\r\n", 0, self._filled)
        if end < 0:
            if self._filled == BUFFER:
                self._fail("head larger than the buffer")
            return
        head = bytes(self._view[:end]).decode("latin-1").split("\r\n")
        status = head[0].split(" ", 2)
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(status) < 2 or status[1] != "200" or length is None:
            self._fail(f"not a 200 with a Content-Length: {head[0]!r}")
            return
        self._in_body = True
        self._left = length
        rest = self._filled - (end + 4)
        self._filled = 0
        if rest:
            # Move the first body piece to the front, then write it.
            self._buffer[:rest] = self._buffer[end + 4 : end + 4 + rest]
            self._write(self._view[:rest])
        elif length == 0:
            self._finish()

    def _write(self, piece: memoryview) -> None:
        size = len(piece)
        if size > self._left:
            self._fail("more bytes than the Content-Length")
            return
        while piece:
            piece = piece[os.write(self._fd, piece) :]
        self._left -= size
        if self._left == 0:
            self._finish()

    def _fail(self, message: str) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ValueError(message))
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        self._in_body = False
        if self._done is not None and not self._done.done():
            self._done.set_result(0)

    async def fetch(self, request: bytes, fd: int) -> None:
        assert self.transport is not None
        self._fd = fd
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        await self._done


def _pairs(path: str) -> Iterator[tuple[str, str]]:
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if fields:
            yield fields[0], fields[1]


async def _run(pairs: list[tuple[str, str]], dest: str, jobs: int) -> bool:
    loop = asyncio.get_running_loop()
    work = iter(pairs)
    ok = True

    async def worker() -> None:
        nonlocal ok
        connection: _Connection | None = None
        for url, name in work:
            parts = urlsplit(url)
            host, port = parts.hostname or "127.0.0.1", parts.port or 80
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept-Encoding: identity\r\n\r\n"
            ).encode("latin-1")
            final = os.path.join(dest, name)
            part = final + ".part"
            try:
                if connection is None or connection.closed:
                    _, connection = await loop.create_connection(_Connection, host, port)
                fd = os.open(part, FLAGS, 0o644)
                try:
                    await connection.fetch(request, fd)
                finally:
                    os.close(fd)
                os.rename(part, final)
            except (OSError, ValueError) as exc:
                print(f"failed: {url}: {exc}", file=sys.stderr)
                ok = False
                connection = None
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(jobs):
            group.create_task(worker())
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raw_client.py")
    parser.add_argument("urls")
    parser.add_argument("dest")
    parser.add_argument("-j", type=int, default=16)
    args = parser.parse_args(argv)
    dest = os.path.abspath(args.dest)
    os.makedirs(dest, exist_ok=True)
    pairs = list(_pairs(args.urls))
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return 0 if runner.run(_run(pairs, dest, max(1, args.j))) else 1


if __name__ == "__main__":
    sys.exit(main())
