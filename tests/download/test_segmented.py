"""One file over several connections: ``asyncconc.downloader._segmented`` (``--split``).

Every test runs against the real loopback server; faults come from its query
parameters (see ``asyncconc.testing._fileserver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncconc import DownloadEvent, DownloadProgress, DownloadRequest, DownloadResult, download
from asyncconc.downloader._segmented import MIN_SEGMENT, plan_segments
from asyncconc.testing import FileServer
from tests.conftest import CliRun, files_under

FAST: dict[str, Any] = {"backoff": 0.0, "backoff_max": 0.0}
MIB = 1 << 20


async def fetch_one(url: str, dest: Path, **options: Any) -> DownloadResult:
    (result,) = await download([url], dest, **{**FAST, **options})
    return result


def file_sha(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def ranges_asked(server: FileServer, name: str) -> list[str | None]:
    return [r.headers.get("Range") for r in server.requests_for(name)]


def saved_segments(dest: Path, name: str) -> list[list[int]]:
    meta = json.loads((dest / f"{name}.part.meta").read_text())
    segments: list[list[int]] = meta["segments"]
    return segments


def test_plan_cuts_into_at_most_split_segments_of_at_least_min_segment() -> None:
    assert plan_segments(8 * MIB, 4) == [(i * 2 * MIB, (i + 1) * 2 * MIB) for i in range(4)]
    assert plan_segments(3 * MIB + 5, 8) == [
        (0, MIB + 2),
        (MIB + 2, 2 * MIB + 4),
        (2 * MIB + 4, 3 * MIB + 5),
    ]
    assert plan_segments(MIB - 1, 4) == [(0, MIB - 1)]
    for size, split in [(10 * MIB + 3, 3), (2 * MIB, 2), (7, 5)]:
        plan = plan_segments(size, split)
        assert plan[0][0] == 0
        assert plan[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
        assert len(plan) == 1 or all(b - a >= MIN_SEGMENT for a, b in plan)


async def test_split_fetches_one_file_in_range_segments_with_if_range(
    server: FileServer, dest: Path
) -> None:
    info = server.add_generated("big.bin", 8 * MIB + 123)
    result = await fetch_one(server.url("big.bin"), dest, split=4, checksum=True)
    assert result.status == "ok", result.error
    assert result.bytes == info.size
    assert result.sha256 == info.sha256 == file_sha(dest / "big.bin")
    asked = ranges_asked(server, "big.bin")
    # The first answer (no Range) carries segment 0; three Range requests the rest.
    assert asked[0] is None
    starts = sorted(int(r.split("=")[1].split("-")[0]) for r in asked[1:] if r)
    assert starts == [a for a, _ in plan_segments(info.size, 4)][1:]
    assert all(r.headers.get("If-Range") == info.etag for r in server.requests_for("big.bin")[1:])
    assert files_under(dest) == {"big.bin"}


async def test_split_falls_back_to_one_connection_without_byte_ranges(
    server: FileServer, dest: Path
) -> None:
    info = server.add_generated("big.bin", 4 * MIB)
    result = await fetch_one(server.url("big.bin", norange=1), dest, split=4)
    assert result.status == "ok", result.error
    assert file_sha(dest / "big.bin") == info.sha256
    assert ranges_asked(server, "big.bin") == [None]


async def test_split_leaves_a_file_below_two_segments_on_one_connection(
    server: FileServer, dest: Path
) -> None:
    info = server.add_generated("small.bin", 2 * MIN_SEGMENT - 1)
    result = await fetch_one(server.url("small.bin"), dest, split=4)
    assert result.status == "ok", result.error
    assert file_sha(dest / "small.bin") == info.sha256
    assert ranges_asked(server, "small.bin") == [None]


async def _interrupted_split(server: FileServer, dest: Path, size: int) -> str:
    """A --split 4 run whose first connection drops after 1.5 MiB: no retries."""
    url = server.url("big.bin", truncate=3 * MIB // 2, times=1)
    result = await fetch_one(url, dest, split=4, retries=0)
    assert result.status == "failed"
    assert not (dest / "big.bin").exists()  # never the final name for a partial file
    assert (dest / "big.bin.part").stat().st_size == size
    return url


async def test_interrupted_segments_resume_where_each_stopped(
    server: FileServer, dest: Path
) -> None:
    info = server.add_generated("big.bin", 8 * MIB)
    url = await _interrupted_split(server, dest, info.size)
    saved = saved_segments(dest, "big.bin")
    assert 0 < saved[0][2] < 2 * MIB  # segment 0 stopped part-way, and says so
    before = len(server.requests_for("big.bin"))
    # The rerun does not even ask for --split: a segmented .part has holes and
    # only the segmented path may finish it (never the one-connection resume).
    result = await fetch_one(url, dest)
    assert result.status == "ok", result.error
    assert file_sha(dest / "big.bin") == info.sha256
    asked = ranges_asked(server, "big.bin")[before:]
    wanted = sorted(f"bytes={a + d}-{b - 1}" for a, b, d in saved if a + d < b)
    assert sorted(r for r in asked if r) == wanted
    assert None not in asked
    assert files_under(dest) == {"big.bin"}


async def test_a_changed_file_is_started_again_not_stitched(server: FileServer, dest: Path) -> None:
    old = server.add_generated("big.bin", 8 * MIB, seed=1)
    url = await _interrupted_split(server, dest, old.size)
    new = server.add_generated("big.bin", 8 * MIB, seed=2)  # new content, new ETag
    assert new.sha256 != old.sha256
    before = len(server.requests_for("big.bin"))
    result = await fetch_one(url, dest, split=4)
    assert result.status == "ok", result.error
    assert file_sha(dest / "big.bin") == new.sha256
    resumed = server.requests_for("big.bin")[before]
    assert resumed.headers.get("If-Range") == old.etag  # the protection was asked for
    assert files_under(dest) == {"big.bin"}


async def test_a_wrong_sha256_never_gets_the_final_name(server: FileServer, dest: Path) -> None:
    server.add_generated("big.bin", 4 * MIB)
    request = DownloadRequest.from_url(server.url("big.bin"), "big.bin", "0" * 64)
    (result,) = await download([request], dest, split=2, **FAST)
    assert result.status == "failed"
    assert "sha256 mismatch" in (result.error or "")
    assert files_under(dest) == set()


def test_split_must_be_at_least_one(dest: Path) -> None:
    with pytest.raises(ValueError, match="split must be at least 1"):
        asyncio.run(download([], dest, split=0))


@pytest.mark.slow
async def test_sigkill_mid_download_then_the_next_run_resumes_each_segment(
    server: FileServer, tmp_path: Path
) -> None:
    info = server.add_generated("big.bin", 16 * MIB)
    # ~1.3 s per 8 MiB segment: 128 pieces of 64 KiB, 10 ms apart.
    url = server.url("big.bin", drip=0.01, drip_size=64 << 10)
    dest = tmp_path / "out"
    urls = tmp_path / "urls.txt"
    urls.write_text(url + "\n")
    cmd = [sys.executable, "-m", "asyncconc", "download", str(urls), "-o", str(dest)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--split", "2", "-q", stdout=asyncio.subprocess.DEVNULL
    )
    meta = dest / "big.bin.part.meta"
    try:
        # Until the sidecar records progress in both segments (it is
        # rewritten every 0.5 s); bounded at 30 s.
        for _ in range(1500):
            if proc.returncode is not None:
                break
            try:
                segments = json.loads(meta.read_text())["segments"]
            except (OSError, ValueError, KeyError):
                segments = []
            if len(segments) == 2 and all(d > 0 for _, _, d in segments):
                break
            await asyncio.sleep(0.02)
        assert proc.returncode is None, "the download ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert not (dest / "big.bin").exists()
    saved = saved_segments(dest, "big.bin")
    assert all(0 < d < b - a for a, b, d in saved)
    part = (dest / "big.bin.part").read_bytes()
    for a, _, d in saved:  # what the sidecar claims is really on disk
        assert (
            hashlib.sha256(part[a : a + d]).hexdigest()
            == hashlib.sha256(await _served(server, "big.bin", a, a + d)).hexdigest()
        )
    before = len(server.requests_for("big.bin"))
    result = await fetch_one(url, dest, split=2)
    assert result.status == "ok", result.error
    assert file_sha(dest / "big.bin") == info.sha256
    asked = sorted(r for r in ranges_asked(server, "big.bin")[before:] if r)
    assert asked == sorted(f"bytes={a + d}-{b - 1}" for a, b, d in saved)
    assert files_under(dest) == {"big.bin"}


async def _served(server: FileServer, name: str, start: int, end: int) -> bytes:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url(name), headers={"Range": f"bytes={start}-{end - 1}"}) as resp,
    ):
        assert resp.status == 206
        return await resp.read()


async def test_cancel_mid_split_keeps_each_segments_progress_for_a_resume(
    server: FileServer, dest: Path
) -> None:
    info = server.add_generated("big.bin", 16 * MIB)
    url = server.url("big.bin", drip=0.002, drip_size=64 << 10)
    received = 0
    enough = asyncio.Event()

    def on_event(event: DownloadEvent) -> None:
        nonlocal received
        if isinstance(event, DownloadProgress):
            received += event.nbytes
            if received >= 8 * MIB:  # half the file: every segment has flushed some
                enough.set()

    task = asyncio.create_task(download([url], dest, split=4, on_event=on_event, **FAST))
    waiter = asyncio.create_task(enough.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    assert not task.done(), "the download ended before it could be cancelled"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (dest / "big.bin").exists()
    saved = saved_segments(dest, "big.bin")
    assert sum(d for _, _, d in saved) >= 4 * MIB  # flushed batches are recorded
    before = len(server.requests_for("big.bin"))
    result = await fetch_one(url, dest, split=4)
    assert result.status == "ok", result.error
    assert file_sha(dest / "big.bin") == info.sha256
    asked = sorted(r for r in ranges_asked(server, "big.bin")[before:] if r)
    assert asked == sorted(f"bytes={a + d}-{b - 1}" for a, b, d in saved if a + d < b)
    assert files_under(dest) == {"big.bin"}


def test_cli_split_with_workers_downloads_verified_files(
    threaded_server: FileServer, tmp_path: Path, run_cli: Callable[..., CliRun]
) -> None:
    big = threaded_server.add_generated("big.bin", 6 * MIB)
    small = threaded_server.add_bytes("small.bin", b"small")
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{threaded_server.url('big.bin')}\n{threaded_server.url('small.bin')}\n")
    out = tmp_path / "out"
    run = run_cli("download", urls, "-o", out, "--split", "3", "--workers", "2", "-q")
    assert run.code == 0, run
    assert file_sha(out / "big.bin") == big.sha256
    assert file_sha(out / "small.bin") == small.sha256
    assert sum(1 for r in ranges_asked(threaded_server, "big.bin") if r) == 2
    assert files_under(out) == {"big.bin", "small.bin"}


def test_cli_split_below_one_is_a_usage_error(
    tmp_path: Path, run_cli: Callable[..., CliRun]
) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text("http://127.0.0.1:9/a\n")
    run = run_cli("download", urls, "-o", tmp_path / "out", "--split", "0")
    assert run.code == 2
    assert "--split" in run.err
    assert "Traceback" not in run.err
    assert not (tmp_path / "out").exists()


async def test_slow_segments_reach_the_part_and_the_sidecar_within_about_a_second(
    server: FileServer, dest: Path
) -> None:
    server.add_generated("big.bin", 4 * MIB)
    # ~320 KiB/s per segment: a 1 MiB batch would take 3 s to fill.
    url = server.url("big.bin", drip=0.05, drip_size=16 << 10)
    received = 0

    def on_event(event: DownloadEvent) -> None:
        nonlocal received
        if isinstance(event, DownloadProgress):
            received += event.nbytes

    task = asyncio.create_task(download([url], dest, split=2, on_event=on_event, **FAST))
    meta = dest / "big.bin.part.meta"
    recorded: list[list[int]] = []
    try:
        for _ in range(500):  # bounded: 10 s
            await asyncio.sleep(0.02)
            with contextlib.suppress(OSError, ValueError, KeyError):
                recorded = json.loads(meta.read_text())["segments"]
            if len(recorded) == 2 and all(d > 0 for _, _, d in recorded):
                break
        assert not task.done()
        assert len(recorded) == 2, recorded
        assert all(d > 0 for _, _, d in recorded), recorded
        # Both segments are on disk although neither filled a 1 MiB batch.
        assert received < 2 * MIB
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    part = (dest / "big.bin.part").read_bytes()
    for a, _, d in saved_segments(dest, "big.bin"):
        assert part[a : a + d] == await _served(server, "big.bin", a, a + d)
