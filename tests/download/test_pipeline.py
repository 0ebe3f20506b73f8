"""The library API: ``Downloader`` and ``download`` (``asyncconc.downloader._pipeline``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from asyncconc import (
    ClosedError,
    Downloader,
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadRequest,
    DownloadResult,
    DownloadStarted,
    download,
)
from asyncconc.testing import FileServer, pattern_bytes, pattern_chunks
from tests.conftest import files_under

FAST: dict[str, Any] = {"backoff": 0.01, "backoff_max": 0.05}


def client_connections(port: int) -> int:
    """This process's established TCP connections to ``port`` (client side)."""
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


def assert_kept_prefix(part: Path, reported: int, *, seed: int) -> None:
    """``part`` holds every reported byte (a chunk being queued may add one more)."""
    kept = part.read_bytes()
    assert reported <= len(kept) <= reported + 1024 * 1024
    assert kept == pattern_bytes(len(kept), seed=seed)


class ProgressGate:
    """An ``on_event`` callback that opens once ``threshold`` bytes arrived."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.received = 0
        self.reached = asyncio.Event()
        self.events: list[DownloadEvent] = []

    def __call__(self, event: DownloadEvent) -> None:
        self.events.append(event)
        if isinstance(event, DownloadProgress):
            self.received += event.nbytes
            if self.received >= self.threshold:
                self.reached.set()


# -- results --------------------------------------------------------------------------


async def test_results_are_typed_and_in_input_order(server: FileServer, dest: Path) -> None:
    server.add_bytes("slow.bin", b"slow")
    server.add_bytes("fast.bin", b"fast")
    finished: list[str] = []

    def on_event(event: DownloadEvent) -> None:
        if isinstance(event, DownloadFinished):
            finished.append(event.result.url)

    urls = [server.url("slow.bin", delay=0.3), server.url("fast.bin")]
    results = await download(urls, dest, on_event=on_event)
    assert finished == [urls[1], urls[0]], "the test needs the first URL to finish last"
    assert [r.url for r in results] == urls
    assert all(isinstance(r, DownloadResult) for r in results)
    assert [(r.path, r.status, r.bytes) for r in results] == [
        ("slow.bin", "ok", 4),
        ("fast.bin", "ok", 4),
    ]
    assert all(r.attempts == 1 and r.error is None and r.seconds >= 0 for r in results)


async def test_per_url_failures_are_results_not_exceptions(server: FileServer, dest: Path) -> None:
    server.add_bytes("ok.bin", b"ok")
    results = await download(
        [
            server.url("missing.bin"),
            "ftp://127.0.0.1/x",
            server.url("ok.bin", status=500),
            server.url("ok.bin"),
            DownloadRequest.from_url(server.url("ok.bin"), "v.bin", "0" * 64),
        ],
        dest,
        retries=0,
        **FAST,
    )
    assert [r.status for r in results] == ["failed", "failed", "failed", "ok", "failed"]
    assert all(r.error for r in results if r.status == "failed")
    assert all(r.sha256 is None for r in results if r.status == "failed")


async def test_strings_are_stripped_and_validated(server: FileServer, dest: Path) -> None:
    server.add_bytes("x", b"x")
    ok, bad = await download(["  " + server.url("x") + "\n", "not a url"], dest)
    assert ok.status == "ok"
    assert bad.status == "failed"
    with pytest.raises(TypeError):
        await download([b"http://h/x"], dest)  # type: ignore[list-item]


async def test_requests_made_with_the_plain_constructor_are_validated(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    (tmp_path / "secret").write_bytes(b"s" * 1234)
    server.add_bytes("x", b"x")
    results = await download(
        [
            DownloadRequest(server.url("x"), name=PurePosixPath("../secret")),
            DownloadRequest(server.url("x"), name=PurePosixPath("/tmp/escape.txt")),
            DownloadRequest("ftp://127.0.0.1/x", name=PurePosixPath("ok")),
            DownloadRequest(server.url("x"), sha256="zz"),
            DownloadRequest(server.url("x"), name=PurePosixPath("fine.bin"), sha256="0" * 64),
        ],
        dest,
    )
    assert [r.status for r in results] == ["failed"] * 5
    assert [r.attempts for r in results] == [0, 0, 0, 0, 1]
    assert "inside the output folder" in (results[0].error or "")
    assert "unsupported scheme" in (results[2].error or "")
    assert "64 hex digits" in (results[3].error or "")
    assert "sha256 mismatch" in (results[4].error or "")
    assert server.hits("x") == 1
    assert files_under(tmp_path) == {"secret"}


async def test_an_empty_list_downloads_nothing(dest: Path) -> None:
    assert await download([], dest) == []
    assert dest.is_dir()


# -- sessions ---------------------------------------------------------------------------


async def test_a_caller_owned_session_is_used_and_left_open(server: FileServer, dest: Path) -> None:
    server.add_bytes("x", b"x")
    async with aiohttp.ClientSession(headers={"X-From-Session": "yes"}) as session:
        (result,) = await download([server.url("x")], dest, session=session)
        assert result.status == "ok"
        assert not session.closed
        async with Downloader(dest, session=session, overwrite=True) as downloader:
            assert (await downloader.download([server.url("x")]))[0].status == "ok"
        assert not session.closed
        async with session.get(server.url("x")) as response:
            assert await response.read() == b"x"
    assert all(r.headers.get("X-From-Session") == "yes" for r in server.requests)


async def test_an_owned_session_is_closed_with_its_connections(
    server: FileServer, dest: Path
) -> None:
    for i in range(4):
        server.add_bytes(f"{i}", b"x" * 1000)
    async with Downloader(dest, concurrency=4) as downloader:
        results = await downloader.download([server.url(f"{i}") for i in range(4)])
        assert {r.status for r in results} == {"ok"}
        assert client_connections(server.port) > 0, "keep-alive expected while open"
    assert client_connections(server.port) == 0
    with pytest.raises(ClosedError):
        await downloader.download([server.url("0")])
    await downloader.aclose()  # idempotent


async def test_a_downloader_must_be_entered_and_only_once(dest: Path) -> None:
    downloader = Downloader(dest)
    with pytest.raises(ClosedError):
        await downloader.download(["http://127.0.0.1/x"])
    async with downloader:
        pass
    with pytest.raises(ClosedError):
        async with downloader:
            pass


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"per_host": 0},
        {"retries": -1},
        {"timeout": 0},
        {"timeout": -1.0},
        {"backoff": -0.1},
    ],
)
def test_bad_options_are_value_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the option
        Downloader(".", **options)


# -- streaming, laziness, bounds ---------------------------------------------------------


async def test_stream_yields_results_as_they_complete(
    threaded_server: FileServer, dest: Path
) -> None:
    server = threaded_server
    server.add_generated("stuck.bin", 1_000_000)
    server.add_bytes("quick.bin", b"quick")
    stuck_url = server.url("stuck.bin", stall=200_000)
    stuck_progressed = asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, DownloadProgress) and event.url == stuck_url:
            stuck_progressed.set()

    async with Downloader(dest, timeout=60, on_event=on_event) as downloader:
        async with contextlib.aclosing(
            downloader.stream([stuck_url, server.url("quick.bin")])
        ) as results:
            first = await anext(results)
            # Under load quick.bin can finish before stuck.bin's first bytes:
            # leave only once there is something to keep.
            async with asyncio.timeout(30):
                await stuck_progressed.wait()
        # Leaving the loop cancelled the stuck download and kept its data.
        assert other_tasks() == set()
    assert first.path == "quick.bin"
    assert first.status == "ok"
    assert files_under(dest) >= {"quick.bin", "stuck.bin.part"}
    assert (dest / "stuck.bin.part").stat().st_size > 0


async def test_input_is_consumed_lazily_within_the_concurrency_bound(
    server: FileServer, dest: Path
) -> None:
    server.add_bytes("x", b"x" * 100)
    pulled = 0
    finished = 0
    ahead: list[int] = []

    def on_event(event: DownloadEvent) -> None:
        nonlocal finished
        if isinstance(event, DownloadFinished):
            finished += 1

    def urls() -> Iterator[str]:
        nonlocal pulled
        for i in range(12):
            pulled += 1
            ahead.append(pulled - finished)
            yield server.url("x", query={"n": i}, delay=0.01 * (i % 3))

    async with Downloader(dest, concurrency=3, on_event=on_event) as downloader:
        results = [r async for r in downloader.stream(urls())]
    assert len(results) == 12
    assert max(ahead) <= 3
    assert max(ahead) == 3


async def test_an_endless_input_is_fine_when_the_caller_stops(
    threaded_server: FileServer, dest: Path
) -> None:
    server = threaded_server
    server.add_bytes("x", b"x")
    endless = (server.url("x", query={"n": i}) for i in itertools.count())
    got: list[DownloadResult] = []
    async with Downloader(dest, concurrency=2) as downloader:
        async with contextlib.aclosing(downloader.stream(endless)) as results:
            async for result in results:
                got.append(result)
                if len(got) == 5:
                    break
        assert other_tasks() == set()
    assert [r.status for r in got] == ["ok"] * 5
    assert len(server.requests) <= 5 + 2


@pytest.mark.parametrize(("concurrency", "per_host"), [(2, None), (8, 1), (8, None)])
async def test_concurrency_and_per_host_bound_the_downloads_in_flight(
    server: FileServer, dest: Path, concurrency: int, per_host: int | None
) -> None:
    server.add_bytes("x", b"y" * 4096)
    active = 0
    peak = 0

    def on_event(event: DownloadEvent) -> None:
        nonlocal active, peak
        if isinstance(event, DownloadStarted):
            active += 1
            peak = max(peak, active)
        elif isinstance(event, DownloadFinished):
            active -= 1

    urls = [server.url("x", query={"n": i}, drip=0.04) for i in range(6)]  # ~0.16 s each
    async with Downloader(
        dest, concurrency=concurrency, per_host=per_host, on_event=on_event
    ) as downloader:
        results = await downloader.download(urls)
    assert {r.status for r in results} == {"ok"}
    bound = min(concurrency, per_host or concurrency, len(urls))
    assert peak <= bound
    assert peak >= min(bound, 3), "the downloads did not overlap"


# -- events -------------------------------------------------------------------------------


async def test_progress_events_describe_every_download(server: FileServer, dest: Path) -> None:
    sizes = {"a.bin": 10, "b.bin": 300_000, "c.bin": 2_500_000}
    for name, size in sizes.items():
        server.add_generated(name, size)
    events: list[DownloadEvent] = []
    urls = [server.url(name) for name in sizes]
    results = await download(urls, dest, on_event=events.append)
    for url, result, (name, size) in zip(urls, results, sizes.items(), strict=True):
        mine = [
            e for e in events if (e.result.url if isinstance(e, DownloadFinished) else e.url) == url
        ]
        assert isinstance(mine[0], DownloadStarted)
        assert mine[0] == DownloadStarted(url, name, size, 0)
        assert mine[-1] == DownloadFinished(result)
        assert all(isinstance(e, DownloadProgress) for e in mine[1:-1])
        assert sum(e.nbytes for e in mine if isinstance(e, DownloadProgress)) == size


# -- cancellation ---------------------------------------------------------------------------


@pytest.mark.parametrize("own_session", [True, False])
async def test_cancelling_the_caller_stops_promptly_and_keeps_the_part(
    threaded_server: FileServer, dest: Path, own_session: bool
) -> None:
    server = threaded_server
    server.add_generated("big.bin", 50_000_000, seed=1)
    gate = ProgressGate(200_000)
    url = server.url("big.bin", drip=0.01, drip_size=16384)
    async with contextlib.AsyncExitStack() as stack:
        session = None
        if not own_session:
            session = await stack.enter_async_context(aiohttp.ClientSession())
        task = asyncio.create_task(download([url], dest, session=session, on_event=gate))
        await asyncio.wait_for(gate.reached.wait(), 30)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert time.monotonic() - cancelled_at < 2
        assert other_tasks() == set()
        assert client_connections(server.port) == 0
        if session is not None:
            assert not session.closed
    assert not any(isinstance(e, DownloadFinished) for e in gate.events)
    assert files_under(dest) == {"big.bin.part", "big.bin.part.meta"}
    assert_kept_prefix(dest / "big.bin.part", gate.received, seed=1)


async def test_cancelling_a_stream_consumer_between_results_cleans_up(
    threaded_server: FileServer, dest: Path
) -> None:
    server = threaded_server
    server.add_bytes("quick.bin", b"quick")
    server.add_generated("big.bin", 50_000_000, seed=2)
    gate = ProgressGate(100_000 + len(b"quick"))
    holding = asyncio.Event()

    async def consume(downloader: Downloader) -> None:
        urls = [server.url("quick.bin"), server.url("big.bin", drip=0.01, drip_size=16384)]
        async with contextlib.aclosing(downloader.stream(urls)) as results:
            async for _result in results:
                holding.set()
                await asyncio.Event().wait()  # busy with the result when cancelled

    async with Downloader(dest, on_event=gate) as downloader:
        task = asyncio.create_task(consume(downloader))
        await asyncio.wait_for(holding.wait(), 30)
        await asyncio.wait_for(gate.reached.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert other_tasks() == set()
    assert (dest / "quick.bin").read_bytes() == b"quick"
    assert_kept_prefix(dest / "big.bin.part", gate.received - len(b"quick"), seed=2)


async def test_a_cancelled_download_resumes_where_it_stopped(
    threaded_server: FileServer, dest: Path
) -> None:
    server = threaded_server
    served = server.add_generated("big.bin", 3_000_000)
    gate = ProgressGate(500_000)
    url = server.url("big.bin", drip=0.005, drip_size=32768)
    task = asyncio.create_task(download([url], dest, on_event=gate))
    await asyncio.wait_for(gate.reached.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = (dest / "big.bin.part").stat().st_size
    assert kept >= 500_000
    (result,) = await download([url], dest)
    assert result.status == "ok"
    assert result.sha256 == served.sha256
    assert server.requests_for("big.bin")[-1].headers["Range"] == f"bytes={kept}-"


async def test_cancelling_while_a_resumed_part_is_hashed_closes_it(
    server: FileServer, dest: Path
) -> None:
    size = 300_000_000
    server.add_generated("big.bin", size + 1000, seed=1)
    dest.mkdir()
    with (dest / "big.bin.part").open("wb") as fh:
        for chunk in pattern_chunks(size + 1000, 1, 0, size):
            fh.write(chunk)
    task = asyncio.create_task(download([server.url("big.bin")], dest))
    while not server.requests:  # the 206 is on its way; hashing the .part comes next
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Let every worker thread finish, then nothing of dest may be open.
    await asyncio.get_running_loop().shutdown_default_executor()
    still_open = [f.path for f in psutil.Process().open_files() if f.path.startswith(str(dest))]
    assert still_open == []
    assert (dest / "big.bin.part").stat().st_size == size


async def test_checksum_off_skips_the_digest_but_still_verifies_a_requested_sha256(
    server: FileServer, dest: Path
) -> None:
    good = server.add_bytes("good.bin", b"g" * 5000)
    server.add_bytes("bad.bin", b"b" * 5000)
    plain = server.add_generated("plain.bin", 3 * 1024 * 1024)
    requests = [
        DownloadRequest.from_url(server.url("good.bin"), sha256=good.sha256),
        DownloadRequest.from_url(server.url("bad.bin"), sha256=good.sha256),
        DownloadRequest.from_url(server.url("plain.bin")),
    ]
    results = await download(requests, dest, checksum=False)
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert results[0].sha256 == good.sha256  # asked for: computed and checked
    assert "sha256 mismatch" in (results[1].error or "")
    assert results[2].sha256 is None  # nobody asked: not computed
    assert hashlib.sha256((dest / "plain.bin").read_bytes()).hexdigest() == plain.sha256
    assert files_under(dest) == {"good.bin", "plain.bin"}
