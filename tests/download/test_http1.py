"""asyncconc's own receive path for plain http:// GETs (downloader/_http1.py).

A scripted server on 127.0.0.1 answers with exact bytes, so each test pins
one wire-level behaviour: keep-alive reuse, a dropped keep-alive, interim
answers, bodies framed by length, chunks or the close, and broken answers.
The downloader's contract above the wire is covered by the other modules
(they run through this path too).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import asyncconc
from asyncconc import Downloader, DownloadResult
from asyncconc.downloader._http1 import Connections

Handler = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Scripted:
    """A server that hands each request head to ``handler`` (True: keep going)."""

    handler: Handler
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/f") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_client.set()
                    return
                self.requests.append(head)
                if not await self.handler(len(self.requests), head, writer):
                    return
        except ConnectionError:  # reset by the client mid-answer
            self.closed_by_client.set()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[Scripted]:
    state = Scripted(handler)
    server = await asyncio.start_server(state._serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()


async def fetch(
    handler: Handler, dest: Path, paths: list[str], **options: Any
) -> tuple[Scripted, list[DownloadResult]]:
    """Download ``paths`` from a scripted server in one Downloader."""
    async with scripted(handler) as server, Downloader(dest, **options) as dl:
        results = await dl.download([server.url(path) for path in paths])
    return server, results


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def answer_with(payload: bytes, *, keep: bool = True) -> Handler:
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        del n, head
        writer.write(payload)
        await writer.drain()
        return keep

    return handler


def body(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest() * 512  # 16 KiB, distinct per n


async def test_many_files_share_keep_alive_connections(tmp_path: Path) -> None:
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        name = int(head.split(b" ")[1].rsplit(b"/", 1)[1])
        writer.write(ok(body(name)))
        await writer.drain()
        return True

    async with scripted(handler) as server:
        urls = [server.url(f"/{i}") for i in range(200)]
        async with Downloader(tmp_path, concurrency=4) as dl:
            results = await dl.download(urls)
    assert [r.status for r in results] == ["ok"] * 200
    for i in range(200):
        assert (tmp_path / str(i)).read_bytes() == body(i)
    assert server.connections <= 4
    assert len(server.requests) == 200


async def test_the_request_names_the_host_the_path_and_asyncconc(tmp_path: Path) -> None:
    async with scripted(answer_with(ok(b"x"))) as server:
        url = server.url("/\u00fc/x?q=1")
        async with Downloader(tmp_path, headers={"X-Token": "t1"}) as dl:
            [result] = await dl.download([url])
    assert result.status == "ok"
    lines = server.requests[0].decode().split("\r\n")
    assert lines[0] == "GET /%C3%BC/x?q=1 HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
    assert fields["Host"] == f"127.0.0.1:{server.port}"
    assert fields["Accept-Encoding"] == "identity"
    assert fields["X-Token"] == "t1"
    assert fields["User-Agent"] == f"asyncconc/{asyncconc.__version__}"


async def test_a_header_with_a_line_break_is_refused_before_sending(tmp_path: Path) -> None:
    server, [result] = await fetch(
        answer_with(ok(b"x")), tmp_path, ["/f"], headers={"X-Evil": "a\r\nInjected: 1"}
    )
    assert result.status == "failed"
    assert result.error is not None
    assert "cannot send the request" in result.error
    assert server.requests == []


async def test_a_keep_alive_the_server_dropped_is_asked_again_at_once(tmp_path: Path) -> None:
    # The second request arrives on the kept connection and the server
    # closes it without an answer (a keep-alive it had just dropped): sent
    # again at once on a new connection, not counted as an attempt.
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            return False
        writer.write(ok(b"answer %d" % n))
        await writer.drain()
        return True

    async with scripted(handler) as server, Downloader(tmp_path, concurrency=1, retries=0) as dl:
        first = await dl.download([server.url("/1")])
        second = await dl.download([server.url("/2")])
    assert first[0].status == "ok"
    assert second[0].status == "ok", second[0].error
    assert second[0].attempts == 1
    assert (tmp_path / "2").read_bytes() == b"answer 3"
    assert server.connections == 2


async def test_interim_answers_are_skipped(tmp_path: Path) -> None:
    payload = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    _, [result] = await fetch(answer_with(payload + ok(b"final")), tmp_path, ["/f"])
    assert result.status == "ok"
    assert (tmp_path / "f").read_bytes() == b"final"


async def test_a_chunked_body_is_decoded(tmp_path: Path) -> None:
    payload = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n"
    )
    server, results = await fetch(answer_with(payload), tmp_path, ["/a", "/b"], concurrency=1)
    assert [r.status for r in results] == ["ok", "ok"]
    assert (tmp_path / "a").read_bytes() == b"hello world"
    assert server.connections == 1  # a chunked answer leaves the connection reusable


async def test_a_body_up_to_the_close_is_complete_at_the_close(tmp_path: Path) -> None:
    _, [result] = await fetch(
        answer_with(b"HTTP/1.0 200 OK\r\n\r\nall of it", keep=False), tmp_path, ["/f"]
    )
    assert result.status == "ok"
    assert (tmp_path / "f").read_bytes() == b"all of it"


async def test_a_chunked_body_cut_short_is_not_complete(tmp_path: Path) -> None:
    payload = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
    _, [result] = await fetch(answer_with(payload, keep=False), tmp_path, ["/f"], retries=0)
    assert result.status == "failed"
    assert result.error is not None
    assert "body ended early" in result.error
    assert not (tmp_path / "f").exists()


async def test_bytes_past_the_announced_length_are_not_saved(tmp_path: Path) -> None:
    server, results = await fetch(
        answer_with(ok(b"12345") + b"GARBAGE"), tmp_path, ["/a", "/b"], concurrency=1
    )
    assert [r.status for r in results] == ["ok", "ok"]
    assert (tmp_path / "a").read_bytes() == b"12345"
    assert server.connections == 2  # the spoiled connection was not reused


@pytest.mark.parametrize(
    "payload",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
)
async def test_an_invalid_answer_fails_at_once_with_a_clear_message(
    tmp_path: Path, payload: bytes
) -> None:
    server, [result] = await fetch(
        answer_with(payload, keep=False), tmp_path, ["/f"], retries=3, backoff=0
    )
    assert result.status == "failed"
    assert result.error == f"127.0.0.1:{server.port} sent an invalid HTTP response"
    assert result.attempts == 1


async def test_a_head_that_never_ends_is_refused(tmp_path: Path) -> None:
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 100_000 + b"\r\n")
        await writer.drain()
        await asyncio.Event().wait()  # never the end of the head
        return False

    server, [result] = await fetch(handler, tmp_path, ["/f"], retries=0)
    assert result.status == "failed"
    assert result.error == f"127.0.0.1:{server.port} sent an invalid HTTP response"


async def test_a_close_before_the_head_is_retried(tmp_path: Path) -> None:
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            return False  # close with no answer at all
        writer.write(ok(b"second time"))
        await writer.drain()
        return True

    _, [result] = await fetch(handler, tmp_path, ["/f"], retries=1, backoff=0)
    assert result.status == "ok"
    assert result.attempts == 2
    assert (tmp_path / "f").read_bytes() == b"second time"


async def test_a_silent_server_times_out_with_the_read_timeout(tmp_path: Path) -> None:
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.Event().wait()
        return False

    server, [result] = await fetch(handler, tmp_path, ["/f"], retries=0, timeout=0.3)
    assert result.status == "failed"
    assert (
        result.error == f"no data from 127.0.0.1:{server.port} for 0.3 s (gave up after 1 attempt)"
    )
    assert (tmp_path / "f.part").read_bytes() == b"abc"


async def test_cookies_a_server_sets_are_sent_back(tmp_path: Path) -> None:
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b"x", b"Set-Cookie: session=s3cr3t; Path=/\r\n"))
        await writer.drain()
        return True

    # A name, not an IP address: aiohttp's cookie jar keeps no cookies of
    # IP hosts (both paths behave alike there).
    async with scripted(handler) as server, Downloader(tmp_path, concurrency=1) as dl:
        await dl.download([f"http://localhost:{server.port}/1"])
        await dl.download([f"http://localhost:{server.port}/2"])
    assert b"Cookie" not in server.requests[0]
    assert b"Cookie: session=s3cr3t" in server.requests[1]


async def test_a_callers_session_carries_every_request(tmp_path: Path) -> None:
    sent: list[str] = []

    async def on_start(
        session: aiohttp.ClientSession, ctx: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        sent.append(str(params.url))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with (
        scripted(answer_with(ok(b"x"))) as server,
        aiohttp.ClientSession(trace_configs=[trace]) as session,
        Downloader(tmp_path, session=session) as dl,
    ):
        results = await dl.download([server.url("/a"), server.url("/b")])
    assert [r.status for r in results] == ["ok", "ok"]
    assert sent == [server.url("/a"), server.url("/b")]


async def test_closing_drops_the_idle_connections(tmp_path: Path) -> None:
    async with scripted(answer_with(ok(b"x"))) as server:
        connections = Connections()
        answer = await connections.get(server.url(), {}, connect_timeout=5, read_timeout=5)
        assert [bytes(p) async for p in answer.pieces()] == [b"x"]
        answer.release()
        assert not server.closed_by_client.is_set()
        await connections.aclose()
        async with asyncio.timeout(10):
            await server.closed_by_client.wait()


async def test_an_answer_left_unfinished_closes_its_connection(tmp_path: Path) -> None:
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:  # half of the body, and then nothing
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        else:
            writer.write(ok(b"whole"))
        await writer.drain()
        return True

    async with scripted(handler) as server:
        connections = Connections()
        answer = await connections.get(server.url(), {}, connect_timeout=5, read_timeout=5)
        answer.release()  # not to the end: the connection cannot be reused
        async with asyncio.timeout(10):
            await server.closed_by_client.wait()
        again = await connections.get(server.url(), {}, connect_timeout=5, read_timeout=5)
        got = b"".join([bytes(p) async for p in again.pieces()])
        again.release()
        await connections.aclose()
    assert got == b"whole"
    assert server.connections == 2
