"""A fresh download's ``.part`` is created while its request is out.

Creating a file costs kernel time (tens of microseconds on ext4, up to ~1 ms
just after thousands of deletions on an ext4 without a journal), so the
downloader does it after the request is written and before the answer comes
(``PartFile.create_early``). These tests pin that it happens then, and that
the early ``.part`` never outlives a download that does not go ahead: an
error status, a body that never comes, a cancel while the server thinks, a
server-given name.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from asyncconc import DownloadResult, download
from asyncconc.testing import FileServer, pattern_bytes
from tests.conftest import files_under, serve_handler

FAST: dict[str, Any] = {"backoff": 0.01, "backoff_max": 0.05}


async def fetch_one(url: str, dest: Path, **options: Any) -> DownloadResult:
    (result,) = await download([url], dest, **{**FAST, **options})
    return result


async def test_the_part_exists_while_the_server_answers(dest: Path) -> None:
    data = pattern_bytes(100_000, seed=3)
    seen: list[set[str]] = []

    async def handle(request: web.Request) -> web.Response:
        # The request is read here once it was written in full, and the
        # client creates the .part right after writing it: give that a
        # generous moment, on the server's side, before answering.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not (dest / "f.bin.part").exists() and loop.time() < deadline:
            await asyncio.sleep(0.005)
        seen.append(files_under(dest))
        return web.Response(body=data, headers={"ETag": '"v1"'})

    async with serve_handler(handle) as base:
        result = await fetch_one(f"{base}/f.bin", dest)
    assert result.status == "ok", result.error
    assert seen == [{"f.bin.part"}]  # created early; no sidecar before data
    assert (dest / "f.bin").read_bytes() == data
    assert files_under(dest) == {"f.bin"}


async def test_a_part_created_early_gets_its_sidecar_with_the_first_data(dest: Path) -> None:
    # A body that stops halfway: the kept .part must be resumable, so the
    # sidecar written with the data names the validator the server gave.
    data = pattern_bytes(3_000_000, seed=4)

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"ETag": '"tag-7"', "Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[:1_500_000])
        assert request.transport is not None
        request.transport.close()
        return response

    async with serve_handler(handle) as base:
        result = await fetch_one(f"{base}/f.bin", dest, retries=0)
    assert result.status == "failed"
    assert result.part == "f.bin.part"
    assert files_under(dest) == {"f.bin.part", "f.bin.part.meta"}
    assert json.loads((dest / "f.bin.part.meta").read_text())["etag"] == '"tag-7"'
    kept = (dest / "f.bin.part").read_bytes()
    assert kept
    assert data.startswith(kept)


@pytest.mark.parametrize("status", [404, 500])
async def test_an_error_status_leaves_no_part(server: FileServer, dest: Path, status: int) -> None:
    server.add_bytes("f.bin", b"payload")
    result = await fetch_one(server.url("f.bin", status=status), dest, retries=1)
    assert result.status == "failed"
    assert f"HTTP {status}" in (result.error or "")
    assert result.part is None
    assert files_under(dest) == set()


async def test_a_body_that_never_comes_leaves_no_part(server: FileServer, dest: Path) -> None:
    server.add_generated("f.bin", 50_000)
    result = await fetch_one(server.url("f.bin", truncate=0), dest, retries=1)
    assert result.status == "failed"
    assert result.attempts == 2
    assert result.part is None
    assert files_under(dest) == set()


async def test_a_cancel_while_the_server_thinks_leaves_no_part(dest: Path) -> None:
    asked = asyncio.Event()
    never = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        asked.set()
        await never.wait()
        return web.Response(body=b"never sent")

    async with serve_handler(handle) as base:
        task = asyncio.create_task(fetch_one(f"{base}/f.bin", dest))
        await asyncio.wait_for(asked.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        never.set()  # lets the server's handler end
    assert files_under(dest) == set()


async def test_a_server_given_name_leaves_no_part_under_the_url_name(
    server: FileServer, dest: Path
) -> None:
    data = pattern_bytes(70_000, seed=5)
    server.add_bytes("download", data)
    result = await fetch_one(server.url("download", cd='attachment; filename="real.bin"'), dest)
    assert result.status == "ok", result.error
    assert result.path == "real.bin"
    assert files_under(dest) == {"real.bin"}
    assert (dest / "real.bin").read_bytes() == data


async def test_no_part_is_created_early_when_one_is_resumed(server: FileServer, dest: Path) -> None:
    # The early create is for fresh starts only: a .part to resume is
    # appended to, never replaced by an empty one.
    data = pattern_bytes(200_000, seed=6)
    server.add_bytes("f.bin", data)
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(data[:50_000])
    result = await fetch_one(server.url("f.bin"), dest)
    assert result.status == "ok", result.error
    assert server.requests_for("f.bin")[-1].headers["Range"] == "bytes=50000-"
    assert (dest / "f.bin").read_bytes() == data
