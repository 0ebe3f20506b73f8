"""Limits of ``serve``: slow and silent clients are cut, big headers refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from asyncconc.testing import serve_files
from asyncconc.testing._static import DEFAULT_LIMITS, ServeLimits

_LIMITS = ServeLimits(idle_timeout=1.0)


async def _closed_after(reader: asyncio.StreamReader) -> float:
    start = time.monotonic()
    await asyncio.wait_for(reader.read(), 30)  # EOF: the server closed
    return time.monotonic() - start


async def test_silent_slowloris_and_idle_clients_are_cut_normal_served(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a" * 1000)
    async with serve_files(tmp_path, faults=False, limits=_LIMITS) as server:

        async def silent() -> float:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                return await _closed_after(reader)
            finally:
                writer.close()

        async def slowloris() -> float:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            request = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"b" * 300

            async def drip() -> None:
                for byte in request:
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.1)

            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(drip())
                took = await _closed_after(reader)
                task.cancel()
            writer.close()
            return took

        async def normal() -> list[float]:
            times: list[float] = []
            async with aiohttp.ClientSession() as session:
                for _ in range(10):
                    start = time.monotonic()
                    async with session.get(server.url("a")) as r:
                        assert await r.read() == b"a" * 1000
                    times.append(time.monotonic() - start)
                    await asyncio.sleep(0.1)
            return times

        async with asyncio.TaskGroup() as tg:
            cuts = [tg.create_task(silent()) for _ in range(20)]
            cuts += [tg.create_task(slowloris()) for _ in range(5)]
            normal_task = tg.create_task(normal())
        cut = [t.result() for t in cuts]
        served = normal_task.result()
    assert all(0.5 < t < 10 for t in cut), cut  # cut after ~1 s, not left open
    assert max(served) < 2, served  # served promptly meanwhile


async def test_idle_keepalive_connection_is_closed(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    async with serve_files(tmp_path, faults=False, limits=_LIMITS) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.readexactly(1), 10) == b"a"
        assert 0.5 < await _closed_after(reader) < 10
        writer.close()


async def test_oversized_headers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    async with serve_files(tmp_path, faults=False) as server:
        for extra in (
            b"X-Big: " + b"b" * (DEFAULT_LIMITS.max_field_size + 10) + b"\r\n",
            b"".join(b"X-%d: 1\r\n" % i for i in range(DEFAULT_LIMITS.max_headers + 10)),
            b"",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
            status = (await asyncio.wait_for(reader.readline(), 10)).split()[1]
            assert status in ((b"400", b"431") if extra else (b"200",)), extra[:20]
            writer.close()


async def test_connections_over_the_cap_are_closed_others_served(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    limits = ServeLimits(max_connections=5)
    async with serve_files(tmp_path, faults=False, limits=limits) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # refused at once
        writer.close()
        for _, w in held:
            w.close()
            await w.wait_closed()
        status = 0
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # slots are freed as the server sees the closes
                try:
                    async with session.get(server.url("a")) as r:
                        status = r.status
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        assert status == 200


async def test_a_file_that_shrinks_while_sent_closes_the_connection(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    size = 64 << 20
    with big.open("wb") as fh:
        fh.truncate(size)
    limits = ServeLimits(idle_timeout=120)  # only the fix may close it in time
    async with serve_files(tmp_path, faults=False, limits=limits) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 16)
        writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert f"Content-Length: {size}".encode() in head
        await asyncio.wait_for(reader.readexactly(1 << 16), 10)  # sending has begun
        with big.open("r+b") as fh:
            fh.truncate(1 << 20)
        got = 0
        async with asyncio.timeout(20):  # EOF, not a connection kept open
            while piece := await reader.read(1 << 20):
                got += len(piece)
        assert got < size - (1 << 16)
        writer.close()
