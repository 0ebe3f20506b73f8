"""``download --workers W``: the list sharded over pool workers, same guarantees."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import asyncconc
from asyncconc.downloader._models import DownloadRequest
from asyncconc.downloader._sharded import shard_requests
from asyncconc.testing import FileServer, pattern_bytes
from tests.conftest import files_under, run_cli_process, start_cli


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _report(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    assert isinstance(data, list)
    return data


def _mixed_list(server: FileServer, tmp_path: Path) -> Path:
    lines = []
    for i in range(24):
        server.add_generated(f"f{i}.bin", 20_000 + i * 1000, seed=i)
        lines.append(server.url(f"f{i}.bin"))
    lines += [
        server.url("f1.bin") + " f0.bin",  # explicit name colliding with a URL name
        # The server's name collides with line 4's URL name. Which claims it first
        # is a race in any mode, so this answer comes late: line 4 always wins.
        server.url("f2.bin", cd='attachment; filename="f3.bin"', delay=1),
        server.url("f4.bin", fail=1),  # a retry
        "ftp://example.invalid/x",  # an invalid line
        server.url("missing.bin"),  # a 404
    ]
    return _write(tmp_path / "urls.txt", lines)


def _shape(report: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["line"], r["path"], r["status"], r["sha256"], r["note"]) for r in report]


async def test_workers_give_the_same_files_names_and_report_as_one_process(
    server: FileServer, tmp_path: Path
) -> None:
    urls = _mixed_list(server, tmp_path)
    one = await run_cli_process(
        "download", urls, "-o", tmp_path / "one", "--report", tmp_path / "one.json", "-q"
    )
    two = await run_cli_process(
        "download",
        urls,
        "-o",
        tmp_path / "two",
        "--report",
        tmp_path / "two.json",
        "-q",
        "--workers",
        "2",
    )
    assert one.code == two.code == 1, (one, two)  # the invalid line and the 404
    assert _shape(_report(tmp_path / "two.json")) == _shape(_report(tmp_path / "one.json"))
    assert files_under(tmp_path / "two") == files_under(tmp_path / "one")
    assert {"f0-2.bin", "f3-2.bin"} <= files_under(tmp_path / "two")
    assert "27 ok, 0 skipped, 2 failed" in two.out


async def test_library_download_with_workers_returns_results_in_order(
    server: FileServer, tmp_path: Path
) -> None:
    names = [f"n{i}.txt" for i in range(10)]
    for name in names:
        server.add_bytes(name, name.encode() * 100)
    events: list[object] = []
    results = await asyncconc.download(
        [server.url(n) for n in names], tmp_path, workers=2, on_event=events.append
    )
    assert [r.path for r in results] == names
    assert all(r.status == "ok" for r in results)
    assert sum(isinstance(e, asyncconc.DownloadFinished) for e in events) == 10
    with pytest.raises(ValueError, match="session"):
        async with __import__("aiohttp").ClientSession() as session:
            await asyncconc.download([server.url("n0.txt")], tmp_path, workers=2, session=session)


def test_same_first_choice_names_share_a_shard_in_list_order() -> None:
    requests = [
        DownloadRequest.from_url(url)
        for url in ("http://h/a.bin", "http://h/b.bin", "http://g/A.BIN?x=1", "http://h/c.bin")
    ]
    shards = shard_requests(requests, 2)
    where = {index: k for k, shard in enumerate(shards) for index, _ in shard}
    assert where[0] == where[2]  # a.bin and A.BIN collide: one worker decides, in order
    assert sorted(where) == [0, 1, 2, 3]
    assert all([i for i, _ in shard] == sorted(i for i, _ in shard) for shard in shards)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _connected_to(port: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            connections = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.raddr and c.raddr.port == port for c in connections):
            found.append(proc)
    return found


async def _wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_killed_worker_fails_only_its_unfinished_urls(
    server: FileServer, tmp_path: Path
) -> None:
    lines = []
    for i in range(6):
        server.add_generated(f"slow{i}.bin", 2 * 1024 * 1024, seed=i)
        lines.append(server.url(f"slow{i}.bin", drip=0.02, drip_size=32768))
    urls = _write(tmp_path / "urls.txt", lines)
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc = await start_cli("download", urls, "-o", out, "--workers", "2", "--report", report)
    try:
        await _wait_until(lambda: len(_connected_to(server.port)) >= 2)
        victim = _connected_to(server.port)[0]
        victim.kill()
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1, stderr.decode()
    entries = _report(report)
    failed = [e for e in entries if e["status"] == "failed"]
    ok = [e for e in entries if e["status"] == "ok"]
    assert failed, "the killed worker's URLs should have failed"
    assert ok, "the other worker's URLs should have finished"
    assert all("worker" in e["error"] for e in failed)
    assert {e["path"] for e in ok} <= files_under(out)


async def test_ctrl_c_with_workers_leaves_no_process_and_keeps_parts(
    server: FileServer, tmp_path: Path
) -> None:
    lines = []
    for i in range(4):
        server.add_generated(f"big{i}.bin", 8 * 1024 * 1024, seed=i)
        lines.append(server.url(f"big{i}.bin", drip=0.02, drip_size=65536))
    urls = _write(tmp_path / "urls.txt", lines)
    out = tmp_path / "out"
    proc = await start_cli("download", urls, "-o", out, "--workers", "2")
    try:
        await _wait_until(
            lambda: any(
                p.name.endswith(".part") and p.stat().st_size >= 1 << 20 for p in out.glob("*")
            )
        )
        helpers = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert helpers, "the run should have worker processes"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 15)
        stopped = time.monotonic() - signalled
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130
    assert stopped < 5
    await _wait_until(lambda: not any(_alive(pid) for pid in helpers), timeout=10)
    parts = [p for p in out.iterdir() if p.name.endswith(".part")]
    assert parts, "the .part files should be kept for a resume"
    for part in parts:  # each holds a true prefix of its file, flushed on the way out
        seed = int(part.name.removeprefix("big").removesuffix(".bin.part"))
        data = part.read_bytes()
        assert data, f"{part.name} is empty: the worker did not save what it held"
        assert data == pattern_bytes(8 * 1024 * 1024, seed)[: len(data)]
