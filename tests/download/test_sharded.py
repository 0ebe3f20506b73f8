"""``download --workers W``: the list sharded over pool workers, same guarantees."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import psutil
import pytest

import asyncconc
from asyncconc.downloader._models import DownloadRequest
from asyncconc.downloader._naming import NameAllocator
from asyncconc.downloader._sharded import _Claims, _Link, _Names, _Parent, shard_requests
from asyncconc.testing import FileServer, pattern_bytes
from tests.conftest import files_under, process_alive, run_cli_process, start_cli, wait_until


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
        await wait_until(lambda: len(_connected_to(server.port)) >= 2)
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
        await wait_until(
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
    await wait_until(lambda: not any(process_alive(pid) for pid in helpers), timeout=10)
    parts = [p for p in out.iterdir() if p.name.endswith(".part")]
    assert parts, "the .part files should be kept for a resume"
    for part in parts:  # each holds a true prefix of its file, flushed on the way out
        seed = int(part.name.removeprefix("big").removesuffix(".bin.part"))
        data = part.read_bytes()
        assert data, f"{part.name} is empty: the worker did not save what it held"
        assert data == pattern_bytes(8 * 1024 * 1024, seed)[: len(data)]


async def test_batched_messages_still_report_every_files_progress_and_result(
    server: FileServer, tmp_path: Path
) -> None:
    sizes: dict[str, int] = {}
    urls = []
    for i in range(40):
        served = server.add_generated(f"m{i}.bin", 16_384 + i)
        sizes[server.url(served.name)] = served.size
        urls.append(server.url(served.name))
    for i in range(2):  # ~0.6 s each: several progress messages while in flight
        served = server.add_generated(f"slow{i}.bin", 1 << 20, seed=100 + i)
        url = server.url(served.name, drip=0.02, drip_size=32768)
        sizes[url] = served.size
        urls.append(url)
    events: list[object] = []
    results = await asyncconc.download(urls, tmp_path, workers=2, on_event=events.append)
    assert [r.status for r in results] == ["ok"] * len(urls)
    for url, size in sizes.items():
        mine = [
            e
            for e in events
            if getattr(e, "url", None) == url
            or (isinstance(e, asyncconc.DownloadFinished) and e.result.url == url)
        ]
        assert isinstance(mine[0], asyncconc.DownloadStarted), mine[:2]
        assert isinstance(mine[-1], asyncconc.DownloadFinished), mine[-2:]
        progress = [e.nbytes for e in mine if isinstance(e, asyncconc.DownloadProgress)]
        assert sum(progress) == size, url  # coalesced, never lost
        if "slow" in url:
            assert len(progress) >= 2, "progress of a long download should come while it runs"
        else:
            assert len(progress) <= 2, "a small file's progress should come in one message"
        assert sum(isinstance(e, asyncconc.DownloadFinished) for e in mine) == 1


def _collision_list(server: FileServer, tmp_path: Path) -> Path:
    # More lines per worker than one batch of names claimed ahead, most of
    # them fighting over a.bin, with explicit names that take the suffixes
    # the collisions would otherwise get.
    server.add_generated("a.bin", 1000, seed=1)
    server.add_generated("b.bin", 1000, seed=2)
    lines = []
    for i in range(90):
        if i % 9 == 4:
            lines.append(server.url("b.bin") + f" a-{i // 3}.bin")
        elif i % 5 == 0:
            lines.append(server.url("b.bin", query={"i": i}))
        else:
            lines.append(server.url("a.bin", query={"i": i}))
    return _write(tmp_path / "urls.txt", lines)


async def test_names_claimed_ahead_are_those_of_one_process_also_on_a_rerun(
    server: FileServer, tmp_path: Path
) -> None:
    urls = _collision_list(server, tmp_path)
    runs = {}
    for label, extra in (("one", []), ("two", ["--workers", "2"])):
        for attempt in ("first", "rerun"):  # the rerun names files from the index
            report = tmp_path / f"{label}-{attempt}.json"
            run = await run_cli_process(
                "download", urls, "-o", tmp_path / label, "--report", report, "-q", *extra
            )
            assert run.code == 0, run
            runs[label, attempt] = _shape(_report(report))
    assert runs["two", "first"] == runs["one", "first"]
    assert runs["two", "rerun"] == runs["one", "rerun"]
    assert {status for _, _, status, _, _ in runs["two", "rerun"]} == {"skipped"}
    assert files_under(tmp_path / "two") == files_under(tmp_path / "one")
    assert len(files_under(tmp_path / "two")) == 90


def test_first_names_are_claimed_in_list_order_over_all_shards() -> None:
    requests = [
        DownloadRequest.from_url("http://h/a.txt"),
        DownloadRequest.from_url("http://h/x", "a-2.txt"),  # another first choice
        DownloadRequest.from_url("http://g/a.txt"),
        DownloadRequest.from_url("http://h/b.txt"),
    ]
    shards = [[(0, requests[0]), (2, requests[2])], [(1, requests[1]), (3, requests[3])]]
    choices = ["a.txt", "a-2.txt", "a.txt", "b.txt"]
    claims = _Claims(NameAllocator(), list(choices), shards)
    # The first worker runs ahead: its second line still comes after line 1.
    assert claims.take(0, 0, 2) == [("a.txt", "a.txt"), ("a.txt", "a-3.txt")]
    assert claims.take(1, 0, 2) == [("a-2.txt", "a-2.txt"), ("b.txt", "b.txt")]
    one = NameAllocator()
    assert [one.claim(PurePosixPath(c)).as_posix() for c in choices] == [
        "a.txt",
        "a-2.txt",
        "a-3.txt",
        "b.txt",
    ]


async def test_a_first_name_other_than_guessed_is_claimed_then(tmp_path: Path) -> None:
    # Over the real socket: line 1 asks for b.txt where a-2.txt was claimed
    # for it; it gets b.txt and a-2.txt is free again.
    requests = [DownloadRequest.from_url(f"http://h/{n}") for n in ("a.txt", "b.txt", "c.txt")]
    allocator = NameAllocator()
    claims = _Claims(allocator, ["a.txt", "a.txt", "c.txt"], [list(enumerate(requests))])
    parent = _Parent(lambda event: None, claims, allocator, [r.url for r in requests])
    address = str(tmp_path / "s.sock")
    server = await asyncio.start_unix_server(parent.serve, address)
    async with server:
        reader, writer = await asyncio.open_unix_connection(address)
        names = _Names(_Link(writer), 0, 3, concurrency=2)
        answers = asyncio.create_task(names.read_answers(reader))
        names.ask_ahead()

        async def download(wanted: str, later: str | None = None) -> list[str]:
            got = [(await names.aclaim(PurePosixPath(wanted), first=True)).as_posix()]
            if later is not None:  # e.g. a server-given name
                got.append((await names.aclaim(PurePosixPath(later))).as_posix())
            return got

        tasks = [
            asyncio.create_task(download(w, "a.txt" if w == "c.txt" else None))
            for w in ("a.txt", "b.txt", "c.txt")
        ]
        claimed = [await t for t in tasks]
        answers.cancel()
        writer.close()
    assert claimed == [["a.txt"], ["b.txt"], ["c.txt", "a-2.txt"]]


async def test_the_parent_of_a_workers_run_does_not_load_aiohttp(
    server: FileServer, tmp_path: Path
) -> None:
    # Only the workers download; the parent hands out names and collects
    # results, so it need not pay aiohttp's import (time and ~10 MB each run).
    server.add_bytes("x.txt", b"x" * 100)
    urls = _write(tmp_path / "urls.txt", [server.url("x.txt")])
    code = (
        "import sys\n"
        "from asyncconc.cli import main\n"
        f"rc = main(['download', {str(urls)!r}, '-o', {str(tmp_path / 'out')!r}, '-q',"
        " '--workers', '2'])\n"
        "print(rc, sorted(m for m in ('aiohttp', 'aiohttp.client') if m in sys.modules))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert out.decode().splitlines()[-1] == "0 []", (out + err).decode()
    assert (tmp_path / "out" / "x.txt").read_bytes() == b"x" * 100


def _pool_processes() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_with_workers_the_pool_starts_while_the_list_is_made(
    threaded_server: FileServer, tmp_path: Path
) -> None:
    # The pool's fork server (a new interpreter importing the downloader)
    # starts on another core while the parent parses the list, instead of
    # after it: the first downloads no longer wait for both in turn.
    from asyncconc.downloader._cli import run_download

    threaded_server.add_bytes("a.txt", b"a" * 1000)
    seen: list[set[int]] = []

    async def source(stack: object) -> list[DownloadRequest]:
        seen.append(_pool_processes())
        return [DownloadRequest.from_url(threaded_server.url("a.txt"), line=1)]

    code = run_download(source, tmp_path / "out", quiet=True, stdout=io.StringIO(), workers=2)
    assert code == 0
    assert len(seen) == 1
    assert seen[0], "no pool process was running while the list was made"
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"a" * 1000
    assert not any(process_alive(pid) for pid in seen[0])


def test_a_list_that_fails_while_the_pool_starts_leaves_no_process(tmp_path: Path) -> None:
    from asyncconc.downloader._cli import run_download

    seen: list[set[int]] = []

    async def source(stack: object) -> list[DownloadRequest]:
        seen.append(_pool_processes())  # the fork server, still importing
        raise OSError("the list could not be read")

    with pytest.raises(OSError, match="could not be read"):
        run_download(source, tmp_path / "out", quiet=True, stdout=io.StringIO(), workers=2)
    assert len(seen) == 1
    assert seen[0], "no pool process was running while the list was made"
    deadline = time.monotonic() + 10
    while any(process_alive(pid) for pid in seen[0]):
        assert time.monotonic() < deadline, f"pool processes outlived the run: {seen[0]}"
        time.sleep(0.02)
    assert not _pool_processes()


async def test_workers_beyond_the_number_of_lines_are_not_started(
    server: FileServer, tmp_path: Path
) -> None:
    server.add_generated("slow.bin", 4 << 20)
    # ~2 s: 64 pieces of 64 KiB, 30 ms apart; counted while it runs.
    urls = _write(tmp_path / "urls.txt", [server.url("slow.bin", drip=0.03, drip_size=65536)])
    out = tmp_path / "out"
    proc = await start_cli("download", urls, "-o", out, "--workers", "4", "-q")
    try:
        await wait_until(lambda: (out / "slow.bin.part").exists() or proc.returncode is not None)
        tree = psutil.Process(proc.pid).children(recursive=True)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    # The fork server and one worker for the one line, not four workers.
    assert len(tree) == 2, [p.cmdline() for p in tree]
    assert (out / "slow.bin").stat().st_size == 4 << 20
