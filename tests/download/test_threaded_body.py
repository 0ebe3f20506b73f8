"""Large bodies received by a thread of their own (``Answer.detach_body``, ``PartFile.receive``).

A body of ``THREAD_BODY_BYTES`` or more on asyncconc's own connections
leaves the loop: a thread reads a duplicate of the socket and writes each
read at once. These tests pin what must not change with it: the bytes, the
keep-alive reuse, a cut or stalled body (the ``.part`` is an exact prefix
and resumes), the read timeout, and cancellation (the thread is gone when
the cancelled download returns). A thread named ``asyncconc-receive`` is
how a test sees that the path was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from asyncconc import Downloader, DownloadEvent, DownloadProgress, download
from asyncconc.downloader._writing import RECEIVERS_PER_CORE, THREAD_BODY_BYTES
from asyncconc.testing import FileServer
from tests.download.test_http1 import Handler, fetch, ok, scripted

SIZE = THREAD_BODY_BYTES + (2 << 20)
CUT = THREAD_BODY_BYTES + (1 << 20)  # where a cut or stalled body stops
THREAD = "asyncconc-receive"


def big(n: int, size: int = SIZE) -> bytes:
    return random.Random(n).randbytes(size)


def receivers() -> int:
    return sum(t.name == THREAD for t in threading.enumerate())


@pytest.fixture
def started() -> Iterator[list[str]]:
    """The names of the threads started during the test (``threading.settrace``)."""
    names: list[str] = []
    previous = threading.gettrace()

    def trace(frame: FrameType, event: Any, arg: Any) -> Any:
        names.append(threading.current_thread().name)
        sys.settrace(previous)  # once per thread: its first call
        return previous(frame, event, arg) if previous is not None else None

    threading.settrace(trace)
    try:
        yield names
    finally:
        threading.settrace(previous)


class Watch:
    """``on_event``: the bytes reported, and an event once ``at`` of them came."""

    def __init__(self) -> None:
        self.progress = 0
        self.reached = asyncio.Event()
        self.at = CUT

    def __call__(self, event: DownloadEvent) -> None:
        if isinstance(event, DownloadProgress):
            self.progress += event.nbytes
            if self.progress >= self.at:
                self.reached.set()


def serve_big(sizes: dict[int, int]) -> Handler:
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        index = int(head.split(b" ")[1].rsplit(b"/", 1)[1])
        writer.write(ok(big(index, sizes[index])))
        await writer.drain()
        return True

    return handler


def stall_after(cut: int) -> Handler:
    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE + big(0)[:cut])
        await writer.drain()
        await asyncio.Event().wait()  # never the rest
        return False

    return handler


async def test_a_large_body_is_received_by_a_thread_and_its_connection_reused(
    tmp_path: Path, started: list[str]
) -> None:
    watch = Watch()
    server, results = await fetch(
        serve_big({0: SIZE, 1: SIZE}), tmp_path, ["/0", "/1"], concurrency=1, on_event=watch
    )
    assert [r.status for r in results] == ["ok", "ok"]
    for i, result in enumerate(results):
        data = (tmp_path / str(i)).read_bytes()
        assert data == big(i)
        assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert started.count(THREAD) == 2
    assert watch.progress == 2 * SIZE  # every byte reported once
    assert server.connections == 1  # read to its end: reused for the next file
    assert receivers() == 0


async def test_a_body_below_the_threshold_stays_on_the_loop(
    tmp_path: Path, started: list[str]
) -> None:
    watch = Watch()
    small = THREAD_BODY_BYTES // 2
    _, [result] = await fetch(serve_big({0: small}), tmp_path, ["/0"], on_event=watch)
    assert result.status == "ok"
    assert (tmp_path / "0").read_bytes() == big(0, small)
    assert watch.progress == small
    assert THREAD not in started


async def test_a_large_body_cut_short_leaves_an_exact_prefix_that_resumes(tmp_path: Path) -> None:
    data = big(0)

    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            writer.write(
                b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: "v1"\r\n\r\n' % SIZE + data[:CUT]
            )
            await writer.drain()
            return False  # close: the body ends early
        assert b"\r\nRange: bytes=%d-\r\n" % CUT in head
        rest = data[CUT:]
        writer.write(
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\n"
            b'Content-Range: bytes %d-%d/%d\r\nETag: "v1"\r\n\r\n'
            % (len(rest), CUT, SIZE - 1, SIZE)
            + rest
        )
        await writer.drain()
        return True

    _, [result] = await fetch(handler, tmp_path, ["/f"], retries=1, backoff=0)
    assert result.status == "ok", result.error
    assert result.attempts == 2
    assert (tmp_path / "f").read_bytes() == data
    assert not (tmp_path / "f.part").exists()


async def test_a_large_body_that_stalls_times_out_and_keeps_what_came(tmp_path: Path) -> None:
    start = time.monotonic()
    server, [result] = await fetch(stall_after(CUT), tmp_path, ["/f"], retries=0, timeout=0.5)
    assert time.monotonic() - start < 30
    assert result.status == "failed"
    assert result.error == (
        f"no data from 127.0.0.1:{server.port} for 0.5 s (gave up after 1 attempt)"
    )
    assert (tmp_path / "f.part").read_bytes() == big(0)[:CUT]
    assert receivers() == 0


async def test_cancelling_a_download_stops_its_receive_thread(tmp_path: Path) -> None:
    watch = Watch()
    async with (
        scripted(stall_after(CUT)) as server,
        Downloader(tmp_path, timeout=300, on_event=watch) as dl,
    ):
        task = asyncio.create_task(dl.download([server.url("/f")]))
        async with asyncio.timeout(60):
            await watch.reached.wait()  # every byte sent is written
        assert receivers() == 1
        task.cancel()
        start = time.monotonic()
        async with asyncio.timeout(30):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert time.monotonic() - start < 10
        assert task.cancelled()
        assert receivers() == 0  # gone when the cancelled download returned
    assert (tmp_path / "f.part").read_bytes() == big(0)[:CUT]
    assert not (tmp_path / "f").exists()


async def test_at_most_two_bodies_per_core_are_received_by_threads_at_once(
    tmp_path: Path, started: list[str]
) -> None:
    limit = RECEIVERS_PER_CORE * (os.cpu_count() or 1)
    count = limit + 2
    go_on = asyncio.Event()

    async def handler(n: int, head: bytes, writer: asyncio.StreamWriter) -> bool:
        index = int(head.split(b" ")[1].rsplit(b"/", 1)[1])
        data = big(index)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE + data[:CUT])
        await writer.drain()
        await go_on.wait()
        writer.write(data[CUT:])
        await writer.drain()
        return True

    watch = Watch()
    watch.at = count * CUT
    async with (
        scripted(handler) as server,
        Downloader(tmp_path, concurrency=count, on_event=watch) as dl,
    ):
        task = asyncio.create_task(dl.download([server.url(f"/{i}") for i in range(count)]))
        async with asyncio.timeout(60):
            await watch.reached.wait()  # every body is in, up to where it stalls
        assert receivers() == limit  # the other two are read on the loop
        go_on.set()
        results = await task
    assert [r.status for r in results] == ["ok"] * count
    for i in range(count):
        assert (tmp_path / str(i)).read_bytes() == big(i)
    assert started.count(THREAD) == limit


async def test_large_segments_of_a_split_file_are_received_by_threads(
    server: FileServer, dest: Path, started: list[str]
) -> None:
    info = server.add_generated("big.bin", 2 * SIZE + 5)
    [result] = await download([server.url("big.bin")], dest, split=2, checksum=True)
    assert result.status == "ok", result.error
    assert result.sha256 == info.sha256
    with (dest / "big.bin").open("rb") as fh:
        assert hashlib.file_digest(fh, "sha256").hexdigest() == info.sha256
    assert started.count(THREAD) == 2  # one per segment
    assert receivers() == 0


async def test_cancelling_a_split_download_stops_its_threads_and_records_what_is_on_disk(
    server: FileServer, dest: Path
) -> None:
    data = big(0, 2 * SIZE + 5)
    server.add_bytes("big.bin", data)
    watch = Watch()
    watch.at = 2 * CUT  # each segment stalls after CUT bytes
    task = asyncio.create_task(
        download([server.url("big.bin", stall=CUT)], dest, split=2, on_event=watch)
    )
    async with asyncio.timeout(60):
        await watch.reached.wait()
    assert receivers() == 2
    task.cancel()
    start = time.monotonic()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert time.monotonic() - start < 10
    assert receivers() == 0
    meta = json.loads((dest / "big.bin.part.meta").read_text())
    part = (dest / "big.bin.part").read_bytes()
    for first, _, done in meta["segments"]:
        assert done == CUT
        assert part[first : first + done] == data[first : first + done]
