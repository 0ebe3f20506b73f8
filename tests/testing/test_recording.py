"""What the test server records: bounded, inspectable, with expectations."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from asyncconc.testing import FileServer, _fileserver, serve_files


def raw_request(server: FileServer, head: str, body: bytes = b"") -> bytes:
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


async def test_headers_are_case_insensitive_and_multi_valued_with_body_and_time() -> None:
    async with serve_files(files={"a": b"x"}) as server:
        before = time.time()
        head = (
            "POST /a HTTP/1.1\r\nHost: h\r\nX-Tag: one\r\nx-tag: two\r\n"
            "Content-Length: 5\r\nConnection: close\r\n"
        )
        await asyncio.to_thread(raw_request, server, head, b"hello")
        (request,) = server.requests
    assert request.headers.getall("X-TAG") == ["one", "two"]
    assert request.headers["x-tag"] == "one"
    assert request.body == b"hello"
    assert before <= request.timestamp <= time.time()


async def test_history_is_bounded_and_zero_keeps_none() -> None:
    big = "v" * 4000
    async with serve_files(files={"a": b"x"}, history=5) as server, aiohttp.ClientSession() as s:
        for i in range(40):
            async with s.get(server.url("a", query={"i": i}), headers={"X-Big": big}) as r:
                await r.read()
        assert len(server.requests) == 5
        assert [r.query["i"] for r in server.requests] == [str(i) for i in range(35, 40)]
    async with serve_files(files={"a": b"x"}, history=0) as server, aiohttp.ClientSession() as s:
        async with s.get(server.url("a")) as r:
            assert await r.read() == b"x"
        assert server.requests == []


async def test_per_url_counters_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fileserver, "_MAX_COUNTERS", 10)
    async with serve_files(files={"a": b"x"}) as server, aiohttp.ClientSession() as s:
        for i in range(30):
            async with s.get(server.url("a", fail=1, query={"i": i})) as r:
                assert r.status == 503  # each URL's first request: its count is fresh
        assert len(server._counts) == 10
        # Requests without a counted fault keep no counter at all.
        for i in range(30):
            async with s.get(server.url("a", query={"j": i})) as r:
                assert r.status == 200
        assert len(server._counts) == 10


async def test_expectations_unordered_with_times() -> None:
    async with serve_files(files={"a": b"x", "b": b"y"}) as server, aiohttp.ClientSession() as s:
        server.expect("a", times=2)
        server.expect("/b", method="HEAD")
        for url in (server.url("a"), server.url("a")):
            async with s.get(url) as r:
                await r.read()
        with pytest.raises(AssertionError, match=r"HEAD /b: expected 1 time\(s\), got 0"):
            server.verify()
        async with s.head(server.url("b")):
            pass
        server.verify()
        async with s.get(server.url("a")) as r:
            await r.read()
        with pytest.raises(AssertionError, match=r"/a: expected 2 time\(s\), got 3"):
            server.verify()


async def test_ordered_and_strict_expectations() -> None:
    async with serve_files(files={"a": b"x", "b": b"y"}) as server, aiohttp.ClientSession() as s:
        server.configure_expectations(ordered=True, strict=True)
        server.expect("a")
        server.expect("b")
        for name in ("b", "a", "zzz"):
            async with s.get(server.url(name)) as r:
                await r.read()
        with pytest.raises(AssertionError) as failed:
            server.verify()
    text = str(failed.value)
    assert "GET /b arrived out of order (next expected: any method /a" in text
    assert "1 unexpected request(s): GET /zzz" in text


async def test_requests_in_flight_are_visible() -> None:
    async with serve_files(files={"a": b"x"}) as server, aiohttp.ClientSession() as s:

        async def get() -> bytes:
            async with s.get(server.url("a", delay=2)) as r:
                return await r.read()

        results = await asyncio.gather(*(get() for _ in range(4)))
        assert results == [b"x"] * 4
        assert server.max_in_flight == 4
        assert server.in_flight == 0
