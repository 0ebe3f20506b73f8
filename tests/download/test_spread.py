"""``download --workers W --split N``: one file's segments over several worker processes.

Real CLI runs (each with its pool of worker processes) against the loopback
server; which processes fetch what is seen from the server's side of the
sockets (:func:`_connected_to`), and ``drip`` keeps the transfers slow enough
to look and to kill.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections import Counter
from pathlib import Path

import psutil
import pytest

from asyncconc.downloader._models import DownloadRequest
from asyncconc.downloader._naming import NameAllocator
from asyncconc.downloader._segmented import plan_segments
from asyncconc.downloader._sharded import _Claims, _frame, _Parent, _read_frame
from asyncconc.testing import FileServer, pattern_bytes
from tests.conftest import files_under, process_alive, run_cli_process, start_cli, wait_until

MIB = 1 << 20


def _connections_per_process(port: int) -> Counter[int]:
    """pid -> connections it has open to the server, over this test's descendants."""
    found: Counter[int] = Counter()
    for proc in psutil.Process().children(recursive=True):
        try:
            connections = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        n = sum(1 for c in connections if c.raddr and c.raddr.port == port)
        if n:
            found[proc.pid] = n
    return found


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _ranges(server: FileServer, name: str, since: int = 0) -> list[str | None]:
    return [r.headers.get("Range") for r in server.requests_for(name)[since:]]


def _segments(out: Path, name: str) -> list[list[int]]:
    try:
        segments: list[list[int]] = json.loads((out / f"{name}.part.meta").read_text())["segments"]
    except (OSError, ValueError, KeyError):
        return []
    return segments


def _sha(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _urls(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "urls.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


async def _stop(proc: asyncio.subprocess.Process, timeout: float = 60) -> tuple[bytes, bytes]:
    try:
        return await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_segments_of_one_file_are_fetched_by_more_than_one_worker_process(
    server: FileServer, tmp_path: Path
) -> None:
    info = server.add_generated("big.bin", 16 * MIB)
    # ~1 s per 4 MiB segment: 64 pieces of 64 KiB, 15 ms apart.
    url = server.url("big.bin", drip=0.015, drip_size=64 << 10)
    out = tmp_path / "out"
    proc = await start_cli(
        "download", _urls(tmp_path, url), "-o", out, "--workers", "2", "--split", "4", "-q"
    )
    seen: set[int] = set()

    def two_fetch() -> bool:
        seen.update(_connections_per_process(server.port))
        return len(seen) >= 2 or proc.returncode is not None

    await wait_until(two_fetch)
    _, err = await _stop(proc)
    assert proc.returncode == 0, err.decode()
    # One line, one owner: a second process connected only to fetch segments.
    assert len(seen) >= 2, seen
    assert _sha(out / "big.bin") == info.sha256
    asked = _ranges(server, "big.bin")
    assert asked[0] is None  # the first answer carries segment 0
    starts = sorted(int(r.split("=")[1].split("-")[0]) for r in asked[1:] if r)
    # Each other segment asked for once: what the helper wrote was kept, not redone.
    assert starts == [a for a, _ in plan_segments(info.size, 4)][1:]
    assert files_under(out) == {"big.bin"}


async def _owner_and_helper(
    server: FileServer, proc: asyncio.subprocess.Process
) -> tuple[int, int]:
    """With --split 3 over 2 workers the owner fetches 2 segments, the helper 1."""
    found: Counter[int] = Counter()

    def both() -> bool:
        nonlocal found
        found = _connections_per_process(server.port)
        assert proc.returncode is None, "the download ended too soon"
        return sorted(found.values()) == [1, 2]

    await wait_until(both)
    (owner, _), (helper, _) = found.most_common()
    return owner, helper


async def test_a_helper_worker_killed_mid_segment_leaves_its_segment_to_the_owner(
    server: FileServer, tmp_path: Path
) -> None:
    info = server.add_generated("big.bin", 12 * MIB)
    url = server.url("big.bin", drip=0.015, drip_size=64 << 10)
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc = await start_cli(
        "download", _urls(tmp_path, url), "-o", out, "--workers", "2", "--split", "3",
        "--report", report, "-q",
    )  # fmt: skip
    _, helper = await _owner_and_helper(server, proc)
    await wait_until(
        lambda: len(_segments(out, "big.bin")) == 3 and _segments(out, "big.bin")[1][2] > 0
    )
    before = len(server.requests_for("big.bin"))
    psutil.Process(helper).kill()
    _, err = await _stop(proc)
    assert proc.returncode == 0, err.decode()
    assert _sha(out / "big.bin") == info.sha256
    (entry,) = json.loads(report.read_text())
    assert entry["status"] == "ok"
    # The owner asked again only for the rest of the helper's segment.
    (again,) = [r for r in _ranges(server, "big.bin", before) if r]
    a, b = plan_segments(info.size, 3)[1]
    first = int(again.split("=")[1].split("-")[0])
    assert a < first < b
    assert again.endswith(f"-{b - 1}")
    assert files_under(out) == {"big.bin"}


def _split3(tmp_path: Path, url: str, out: Path) -> list[str | Path]:
    return ["download", _urls(tmp_path, url), "-o", out, "--workers", "2", "--split", "3", "-q"]


async def _stopped_run(server: FileServer, tmp_path: Path, url: str, victim: str) -> Path:
    """A --workers 2 --split 3 run stopped mid-file.

    ``victim``: "owner" (the worker owning the URL is SIGKILLed), "parent"
    (the CLI process is SIGKILLed) or "ctrl-c" (SIGINT to the CLI process).
    """
    out = tmp_path / "out"
    proc = await start_cli(*_split3(tmp_path, url, out))
    owner, _ = await _owner_and_helper(server, proc)
    # Until the sidecar records progress in every segment, the helper's too.
    await wait_until(lambda: [d > 0 for _, _, d in _segments(out, "big.bin")] == [True] * 3)
    workers = _descendants() - {proc.pid}
    if victim == "owner":
        psutil.Process(owner).kill()
    elif victim == "parent":
        proc.kill()
    else:
        proc.send_signal(signal.SIGINT)
    stdout, err = await _stop(proc)
    expected_code = {"owner": 1, "parent": -signal.SIGKILL, "ctrl-c": 130}[victim]
    assert proc.returncode == expected_code, err.decode()
    if victim == "owner":
        assert "worker" in stdout.decode()  # the line failed, and says why
    # No worker outlives the run, helpers included.
    await wait_until(lambda: not any(process_alive(pid) for pid in workers), timeout=10)
    assert not (out / "big.bin").exists()
    return out


@pytest.mark.parametrize("victim", ["owner", "parent", "ctrl-c"])
async def test_a_split_file_stopped_mid_way_is_resumed_per_segment_by_the_next_run(
    server: FileServer, tmp_path: Path, victim: str
) -> None:
    info = server.add_generated("big.bin", 12 * MIB, seed=3)
    url = server.url("big.bin", drip=0.015, drip_size=64 << 10)
    out = await _stopped_run(server, tmp_path, url, victim)
    saved = _segments(out, "big.bin")
    assert all(0 < d < b - a for a, b, d in saved)
    data = (out / "big.bin.part").read_bytes()
    expected = pattern_bytes(info.size, 3)
    for a, _, d in saved:  # what the sidecar claims (whoever wrote it) is on disk
        assert data[a : a + d] == expected[a : a + d]
    before = len(server.requests_for("big.bin"))
    run = await run_cli_process(*_split3(tmp_path, url, out))
    assert run.code == 0, run
    assert _sha(out / "big.bin") == info.sha256
    # Only what each segment lacked was asked for, by whichever process.
    asked = sorted(r for r in _ranges(server, "big.bin", before) if r)
    assert asked == sorted(f"bytes={a + d}-{b - 1}" for a, b, d in saved)
    assert None not in _ranges(server, "big.bin", before)
    assert files_under(out) == {"big.bin"}


async def test_a_file_changed_between_runs_is_fetched_again_not_stitched(
    server: FileServer, tmp_path: Path
) -> None:
    old = server.add_generated("big.bin", 12 * MIB, seed=1)
    url = server.url("big.bin", drip=0.015, drip_size=64 << 10)
    out = await _stopped_run(server, tmp_path, url, "owner")
    new = server.add_generated("big.bin", 12 * MIB, seed=2)  # new content, new ETag
    assert new.sha256 != old.sha256
    before = len(server.requests_for("big.bin"))
    run = await run_cli_process(*_split3(tmp_path, url, out))
    assert run.code == 0, run
    assert _sha(out / "big.bin") == new.sha256
    resumed = [r for r in server.requests_for("big.bin")[before:] if r.headers.get("Range")]
    assert resumed, "the rerun should have tried to resume"
    assert all(r.headers.get("If-Range") == old.etag for r in resumed)
    assert files_under(out) == {"big.bin"}


async def test_without_byte_ranges_a_split_file_takes_one_connection_with_workers(
    server: FileServer, tmp_path: Path
) -> None:
    info = server.add_generated("big.bin", 6 * MIB)
    small = server.add_bytes("small.bin", b"small")
    out = tmp_path / "out"
    urls = _urls(tmp_path, server.url("big.bin", norange=1), server.url("small.bin"))
    run = await run_cli_process("download", urls, "-o", out, "--workers", "2", "--split", "4", "-q")
    assert run.code == 0, run
    assert _sha(out / "big.bin") == info.sha256
    assert _sha(out / "small.bin") == small.sha256
    assert _ranges(server, "big.bin") == [None]
    assert files_under(out) == {"big.bin", "small.bin"}


async def test_the_parent_holds_a_segment_until_a_helper_says_hello_and_returns_a_lost_one(
    tmp_path: Path,
) -> None:
    # The parent's side over a real socket: two workers expected, the owner asks
    # for a helper before the other one has connected.
    requests = [DownloadRequest.from_url("http://h/big.bin")]
    allocator = NameAllocator()
    shards: list[list[tuple[int, DownloadRequest]]] = [list(enumerate(requests)), []]
    parent = _Parent(
        lambda event: None, _Claims(allocator, ["big.bin"], shards), allocator, ["http://h/big.bin"]
    )
    parent.expected = 2
    address = str(tmp_path / "s.sock")
    server = await asyncio.start_unix_server(parent.serve, address)
    async with server:
        owner_r, owner_w = await asyncio.open_unix_connection(address)
        owner_w.write(_frame([("hello", 0), ("seg", 1, {"segment": (0, 10, 0)})]))
        await wait_until(lambda: parent.waiting)
        helper_r, helper_w = await asyncio.open_unix_connection(address)
        helper_w.write(_frame([("hello", 1)]))
        assert await _read_frame(helper_r) == [("seg", 0, 1, {"segment": (0, 10, 0)})]
        helper_w.write(_frame([("seg-done", 0, 1, 4)]))
        assert await _read_frame(owner_r) == [("seg-done", 1, 4)]
        helper_w.close()  # the helper dies: its job comes back to the owner
        assert await _read_frame(owner_r) == [
            ("seg-end", 1, None, ("retry", "the helper process stopped"))
        ]
        # No other worker left and none to come: a new job is refused at once.
        owner_w.write(_frame([("seg", 2, {"segment": (10, 20, 0)})]))
        assert await _read_frame(owner_r) == [
            ("seg-end", 2, None, ("retry", "no other worker process"))
        ]
        owner_w.close()
