"""A pool-owned DaskPool's fork server forked from a single-threaded program.

Each test runs :mod:`tests.pool._forked_program` as a real process (this
test process runs threads of its own: pytest's faulthandler watchdog, so
only a separate program can show the single-threaded case) and reads its
JSON reports; the program waits on stdin wherever a test acts while its
pool runs. Skipped when the ``dask`` extra is missing or not on Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from tests.conftest import process_alive, wait_until

pytest.importorskip("distributed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks only on Linux"),
]

ROOT = Path(__file__).resolve().parents[2]
SPAWNED = "from multiprocessing.forkserver import main"
# Every wait for the program's next report; a start takes 0.3-1.5 s here.
STEP = 90.0


class Program:
    """``python -m tests.pool._forked_program ARGS``, its reports and its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.pids: set[int] = {proc.pid}  # every process seen, killed at teardown

    async def expect(self, event: str) -> dict[str, Any]:
        """The next report, which must be ``event``."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(STEP):
            line = await self.proc.stdout.readline()
        assert line, f"the program ended before {event!r}:\n{self.stderr.read_text()}"
        report: dict[str, Any] = json.loads(line)
        assert report["event"] == event, report
        for key in ("server", "workers"):
            value = report.get(key)
            if isinstance(value, int):
                self.pids.add(value)
            elif isinstance(value, list):
                self.pids.update(value)
        return report

    async def go_on(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")
        await self.proc.stdin.drain()

    async def finished(self) -> int:
        async with asyncio.timeout(STEP):
            return await self.proc.wait()

    def cmdline(self) -> list[str]:
        return list(psutil.Process(self.proc.pid).cmdline())


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    programs: list[Program] = []

    async def starter(*args: str) -> Program:
        stderr = tmp_path / f"stderr-{len(programs)}.txt"
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.pool._forked_program",
                *args,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        programs.append(Program(proc, stderr))
        return programs[-1]

    yield starter
    for program in programs:
        for pid in program.pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).send_signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            program.proc.kill()
        await program.proc.wait()


async def _connect(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


def _gone(pids: list[int]) -> Callable[[], bool]:
    return lambda: not any(process_alive(pid) for pid in pids)


async def test_a_single_threaded_program_forks_the_fork_server_from_itself(
    start: Callable[..., Any],
) -> None:
    program: Program = await start()
    assert (await program.expect("opening"))["threads"] == 1
    opened = await program.expect("open")
    server = opened["server"]
    assert opened["results_ok"]
    # A fork of the program, not a new interpreter running multiprocessing's server.
    assert psutil.Process(server).cmdline() == program.cmdline()
    assert psutil.Process(server).ppid() == program.proc.pid
    assert psutil.Process(server).num_threads() == 1
    assert opened["parents"] == [server]  # the workers forked from it
    closed = await program.expect("pool-closed")
    # The pool stopped the server it started (and reaped it) before reporting.
    assert closed["server"] is None
    assert not process_alive(server)
    await wait_until(_gone(opened["workers"]), timeout=30)
    assert await program.finished() == 0


async def test_a_program_running_another_thread_keeps_the_spawned_fork_server(
    start: Callable[..., Any],
) -> None:
    program: Program = await start("--thread")
    assert (await program.expect("opening"))["threads"] == 2
    opened = await program.expect("open")
    server = opened["server"]
    assert opened["results_ok"]
    assert SPAWNED in " ".join(psutil.Process(server).cmdline())
    assert opened["parents"] == [server]
    assert (await program.expect("pool-closed"))["server"] is None
    assert not process_alive(server)
    await wait_until(_gone(opened["workers"]), timeout=30)
    assert await program.finished() == 0


async def test_an_unknown_fork_server_layout_keeps_the_spawned_fork_server(
    start: Callable[..., Any],
) -> None:
    program: Program = await start("--unknown-layout")
    assert (await program.expect("opening"))["threads"] == 1
    opened = await program.expect("open")
    assert opened["results_ok"]
    assert SPAWNED in " ".join(psutil.Process(opened["server"]).cmdline())
    assert (await program.expect("pool-closed"))["server"] is None
    assert await program.finished() == 0


async def test_sockets_the_program_closes_while_the_pool_runs_really_close(
    start: Callable[..., Any],
) -> None:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait((reader, writer))

    peer = await asyncio.start_server(on_client, "127.0.0.1", 0)
    async with peer:
        program: Program = await start("--peer", str(peer.sockets[0].getsockname()[1]))
        port = (await program.expect("listening"))["port"]
        async with asyncio.timeout(STEP):
            reader, writer = await accepted.get()
        await program.expect("opening")
        opened = await program.expect("open")
        assert psutil.Process(opened["server"]).cmdline() == program.cmdline()  # forked
        await program.expect("sockets-closed")
        # Neither the fork server nor the workers forked from it hold them.
        try:
            async with asyncio.timeout(30):
                assert await reader.read() == b""
        finally:
            writer.close()
        with pytest.raises(ConnectionRefusedError):
            await _connect(port)
        await program.go_on()
        await program.expect("pool-closed")
        assert await program.finished() == 0


async def test_killing_the_program_ends_its_fork_server_and_workers(
    start: Callable[..., Any],
) -> None:
    program: Program = await start("--hold")
    await program.expect("opening")
    opened = await program.expect("open")
    server = opened["server"]
    assert psutil.Process(server).cmdline() == program.cmdline()
    program.proc.kill()
    assert await program.finished() == -signal.SIGKILL
    await wait_until(_gone([server, *opened["workers"]]), timeout=30)


async def test_a_worker_sigkilled_mid_map_completes_with_retries_on_the_forked_path(
    start: Callable[..., Any], tmp_path: Path
) -> None:
    program: Program = await start("--crash", str(tmp_path / "crashed"))
    await program.expect("opening")
    opened = await program.expect("open")
    assert psutil.Process(opened["server"]).cmdline() == program.cmdline()
    crashed = await program.expect("crashed")
    assert crashed == {"event": "crashed", "results": 4, "crashed_once": True}
    assert (await program.expect("pool-closed"))["server"] is None
    assert await program.finished() == 0
