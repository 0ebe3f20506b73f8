"""Issue 7 item 3: a rerun fetches nothing that is already complete.

The server's request log is the measure: a file this tool saved before
costs no request at all; a file with no record costs one HEAD (no body);
``update=True`` re-checks with a conditional request and downloads again
only what changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from asyncconc import DownloadRequest, download
from asyncconc.downloader._index import INDEX_NAME
from asyncconc.testing import FileServer
from tests.conftest import files_under, serve_handler, start_cli

FAST: dict[str, Any] = {"backoff": 0.01, "backoff_max": 0.05}


def the_list(server: FileServer) -> list[str | DownloadRequest]:
    server.add_generated("plain.bin", 300_000)
    server.add_generated("served.bin", 50_000)
    server.add_bytes("dup/a.txt", b"first a")
    server.add_bytes("other/a.txt", b"second a")
    server.add_bytes("named.bin", b"explicit")
    return [
        server.url("plain.bin"),
        server.url("served.bin", cd='attachment; filename="from-server.bin"'),
        server.url("dup/a.txt"),
        server.url("other/a.txt"),  # collides: stored as a-2.txt
        DownloadRequest.from_url(server.url("named.bin"), "sub/explicit.bin"),
    ]


async def test_a_rerun_sends_no_request_for_what_it_saved(server: FileServer, dest: Path) -> None:
    urls = the_list(server)
    first = await download(urls, dest, **FAST)
    assert [r.status for r in first] == ["ok"] * 5
    assert [r.path for r in first] == [
        "plain.bin",
        "from-server.bin",
        "a.txt",
        "a-2.txt",
        "sub/explicit.bin",
    ]
    before = len(server.requests)
    second = await download(urls, dest, **FAST)
    assert server.requests[before:] == []  # not one request
    assert [r.status for r in second] == ["skipped"] * 5
    assert [r.path for r in second] == [r.path for r in first]
    assert [r.bytes for r in second] == [r.bytes for r in first]
    assert (dest / "a-2.txt").read_bytes() == b"second a"


async def test_a_file_with_no_record_costs_one_head_and_no_body(
    server: FileServer, dest: Path
) -> None:
    urls = the_list(server)[:4]
    await download(urls, dest, **FAST)
    (dest / INDEX_NAME).unlink()  # e.g. saved by an older version, or another tool
    before = len(server.requests)
    again = await download(urls, dest, **FAST)
    asked = server.requests[before:]
    # a.txt and a-2.txt: the second URL finds a.txt taken by the first line.
    assert sorted(r.method for r in asked) == ["GET", "HEAD", "HEAD", "HEAD"]
    assert [r.status for r in again[:3]] == ["skipped"] * 3
    # Now recorded: the next run asks nothing at all for those.
    before = len(server.requests)
    await download(urls, dest, **FAST)
    assert [r.method for r in server.requests[before:]] == []


async def test_records_never_confuse_two_urls(server: FileServer, dest: Path) -> None:
    server.add_bytes("x/a.bin", b"from x")
    server.add_bytes("y/a.bin", b"from y")
    (first,) = await download([server.url("x/a.bin")], dest, **FAST)
    # Another URL whose name would be a.bin: a.bin is x's, so y gets its own.
    (other,) = await download([server.url("y/a.bin")], dest, **FAST)
    assert (first.path, other.path) == ("a.bin", "a-2.bin")
    assert other.status == "ok"
    assert other.note
    assert "another URL" in other.note
    assert (dest / "a.bin").read_bytes() == b"from x"
    assert (dest / "a-2.bin").read_bytes() == b"from y"
    before = len(server.requests)
    both = await download([server.url("x/a.bin"), server.url("y/a.bin")], dest, **FAST)
    assert [(r.status, r.path) for r in both] == [("skipped", "a.bin"), ("skipped", "a-2.bin")]
    assert server.requests[before:] == []


async def test_a_file_changed_since_is_not_taken_on_trust(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"12345")
    await download([server.url("f.bin")], dest, **FAST)
    (dest / "f.bin").write_bytes(b"123")  # edited: size and time differ from the record
    before = len(server.requests)
    await download([server.url("f.bin")], dest, **FAST)
    assert [r.method for r in server.requests[before:]] == ["HEAD"]


async def test_a_torn_or_hostile_index_line_is_ignored(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"data")
    await download([server.url("f.bin")], dest, **FAST)
    with (dest / INDEX_NAME).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"url": "u", "path": "../../etc/passwd", "size": 1, "mtime_ns": 1}))
        fh.write('\n{"url": "torn", "pa')
    before = len(server.requests)
    (again,) = await download([server.url("f.bin")], dest, **FAST)
    assert again.status == "skipped"
    assert server.requests[before:] == []


# -- update=True (--update): a server that answers conditional requests -----------------


@contextlib.asynccontextmanager
async def validating_server(files: dict[str, bytes]) -> AsyncIterator[tuple[str, list[Any]]]:
    """ETag + Last-Modified, 304 for If-None-Match / If-Modified-Since matches."""
    log: list[Any] = []

    def tag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:12] + '"'

    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        log.append((request.method, name, dict(request.headers)))
        data = files[name]
        modified = f"Tue, 01 Dec 2026 00:00:{len(data) % 60:02d} GMT"
        headers = {"ETag": tag(data), "Last-Modified": modified}
        if request.headers.get("If-None-Match") == tag(data):
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, headers=headers)

    async with serve_handler(handle) as base:
        yield base, log


async def test_update_rechecks_and_downloads_only_what_changed(dest: Path) -> None:
    files = {"same.bin": b"same" * 1000, "changes.bin": b"old"}
    async with validating_server(files) as (base, log):
        urls = [f"{base}/same.bin", f"{base}/changes.bin"]
        await download(urls, dest, **FAST)
        files["changes.bin"] = b"new content"
        log.clear()
        same, changed = await download(urls, dest, update=True, **FAST)
        assert all(method == "GET" for method, _, _ in log)
        assert {name: h.get("If-None-Match") for _, name, h in log} == {
            "same.bin": '"' + hashlib.sha256(b"same" * 1000).hexdigest()[:12] + '"',
            "changes.bin": '"' + hashlib.sha256(b"old").hexdigest()[:12] + '"',
        }
        assert all("If-Modified-Since" in h for _, _, h in log)
        assert (same.status, same.unchanged, same.bytes) == ("skipped", True, 4000)
        assert (changed.status, changed.unchanged) == ("ok", None)
        assert (dest / "changes.bin").read_bytes() == b"new content"
        assert (dest / "same.bin").read_bytes() == b"same" * 1000
        assert files_under(dest) == {"same.bin", "changes.bin"}
        # Without update, nothing is asked; with it, the new validator is used.
        log.clear()
        await download(urls, dest, **FAST)
        assert log == []
        _, again = await download(urls, dest, update=True, **FAST)
        assert again.unchanged is True


async def test_the_cli_update_option_reports_unchanged_files(tmp_path: Path) -> None:
    from tests.conftest import run_cli_process

    files = {"same.bin": b"same", "changes.bin": b"old"}
    async with validating_server(files) as (base, log):
        urls = tmp_path / "urls.txt"
        urls.write_text(f"{base}/same.bin\n{base}/changes.bin\n", encoding="utf-8")
        out, report = tmp_path / "out", tmp_path / "r.json"
        first = await run_cli_process("download", urls, "-o", out)
        assert first.code == 0, first
        files["changes.bin"] = b"new"
        log.clear()
        plain = await run_cli_process("download", urls, "-o", out)
        assert plain.code == 0, plain
        assert log == []  # no --update: nothing is asked
        run = await run_cli_process("download", urls, "-o", out, "--update", "--report", report)
        assert run.code == 0, run
        entries = json.loads(report.read_text("utf-8"))
        assert [(e["status"], e["unchanged"]) for e in entries] == [
            ("skipped", True),
            ("ok", None),
        ]
        assert (out / "changes.bin").read_bytes() == b"new"


async def test_a_record_of_this_run_does_not_rename_a_later_line(
    server: FileServer, dest: Path
) -> None:
    # The same URL twice, the first under an explicit name. One at a time,
    # the first is saved (and recorded) before the second starts; the second
    # must still get the URL's own name, as it does when both run at once:
    # names never depend on which line happened to finish first.
    server.add_bytes("same.bin", b"same bytes")
    url = server.url("same.bin")
    urls: list[str | DownloadRequest] = [DownloadRequest.from_url(url, "kept.bin"), url]
    for concurrency in (1, 2):
        out = dest / str(concurrency)
        results = await download(urls, out, concurrency=concurrency, **FAST)
        assert [(r.status, r.path, r.note) for r in results] == [
            ("ok", "kept.bin", None),
            ("ok", "same.bin", None),
        ]


async def test_records_appended_after_a_run_began_are_not_read_by_it(
    server: FileServer, dest: Path
) -> None:
    # The worker processes of one --workers run start at different times;
    # each reads the index only up to its size when the run began.
    from asyncconc import Downloader

    server.add_bytes("late.bin", b"late")
    url = server.url("late.bin")
    first = await download([DownloadRequest.from_url(url, "elsewhere.bin")], dest, **FAST)
    assert first[0].status == "ok"
    assert (dest / INDEX_NAME).stat().st_size > 0
    async with Downloader(dest, **FAST) as downloader:
        got = [r async for _, r in downloader._run([url], index_bytes=0)]
    assert [(r.status, r.path) for r in got] == [("ok", "late.bin")]
    async with Downloader(dest, **FAST) as downloader:
        again = [r async for _, r in downloader._run([url])]
    assert [(r.status, r.path) for r in again] == [("skipped", "late.bin")]


async def test_every_record_is_in_the_index_when_the_run_returns(
    server: FileServer, dest: Path
) -> None:
    # Records are gathered and appended in batches (not an open, a write and
    # a close per file): still, every one is on disk when the run returns.
    for i in range(40):
        server.add_bytes(f"b{i}.bin", b"x" * (i + 1))
    urls: list[str | DownloadRequest] = [server.url(f"b{i}.bin") for i in range(40)]
    results = await download(urls, dest, concurrency=40, **FAST)
    assert {r.status for r in results} == {"ok"}
    lines = (dest / INDEX_NAME).read_text().splitlines()
    assert sorted(json.loads(line)["path"] for line in lines) == sorted(
        f"b{i}.bin" for i in range(40)
    )


async def test_records_reach_the_index_while_the_run_goes_on(
    server: FileServer, dest: Path
) -> None:
    # README: records are appended at most 0.25 s after the file is in place,
    # not only at the end, so a SIGKILL loses at most that much. Five files
    # finish; a sixth holds the run open; the index must list the five well
    # before the run ends (a generous bound), and still after the SIGKILL.
    names = [f"r{i}.bin" for i in range(5)]
    for name in names:
        server.add_bytes(name, name.encode() * 100)
    server.add_bytes("held.bin", b"held")
    urls = dest.parent / "urls.txt"
    urls.write_text("\n".join([*map(server.url, names), server.url("held.bin", delay=60)]))
    proc = await start_cli("download", urls, "-o", dest, "-q")
    try:
        deadline = time.monotonic() + 30
        while not all((dest / name).exists() for name in names):
            assert time.monotonic() < deadline, "the five files never arrived"
            await asyncio.sleep(0.02)
        saved_at = time.monotonic()
        recorded: set[str] = set()
        while recorded != set(names):
            assert time.monotonic() - saved_at < 5, f"only {recorded} recorded"
            await asyncio.sleep(0.02)
            with contextlib.suppress(FileNotFoundError):
                lines = (dest / INDEX_NAME).read_text().splitlines()
                recorded = {json.loads(line)["path"] for line in lines if line.endswith("}")}
        assert proc.returncode is None  # the run is still going on
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    lines = (dest / INDEX_NAME).read_text().splitlines()
    assert sorted(json.loads(line)["path"] for line in lines) == names
