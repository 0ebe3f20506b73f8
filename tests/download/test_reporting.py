"""What people see: the live display on a terminal, lines otherwise, the summary."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import sys
from pathlib import Path

from rich.console import Console

from asyncconc import DownloadFinished, DownloadProgress, DownloadResult, DownloadStarted
from asyncconc.downloader._reporting import LineReporter, LiveReporter, Tally, summary_line
from asyncconc.testing import serve_files


def _result(status: str = "ok", error: str | None = None) -> DownloadResult:
    return DownloadResult(
        url="http://h/a.bin",
        path="a.bin",
        status=status,  # type: ignore[arg-type]
        bytes=10,
        sha256="0" * 64 if status == "ok" else None,
        attempts=1,
        error=error,
        seconds=0.1,
    )


def test_live_reporter_counts_a_resumed_retry_once() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    live = LiveReporter(console, total_files=1)
    live(DownloadStarted("http://h/a.bin", "a.bin", 1000, 0))
    live(DownloadProgress("http://h/a.bin", 300))
    live(DownloadStarted("http://h/a.bin", "a.bin", 1000, 300))  # resumed after a drop
    live(DownloadProgress("http://h/a.bin", 700))
    overall = live._progress.tasks[0]
    assert (overall.completed, overall.total) == (1000, 1000)
    live(DownloadFinished(_result()))
    live.close()
    assert "1/1 files" in console.file.getvalue()  # type: ignore[attr-defined]


def test_line_reporter_prints_one_line_per_file_and_quiet_only_failures() -> None:
    loud, quiet = io.StringIO(), io.StringIO()
    for stream, is_quiet in ((loud, False), (quiet, True)):
        reporter = LineReporter(stream, quiet=is_quiet)
        reporter(DownloadProgress("http://h/a.bin", 10))
        reporter(DownloadFinished(_result()))
        reporter(DownloadFinished(_result("failed", "HTTP 404 Not Found")))
    assert len(loud.getvalue().splitlines()) == 2
    assert quiet.getvalue().splitlines() == ["failed   http://h/a.bin: HTTP 404 Not Found"]


def test_summary_counts_statuses_and_bytes() -> None:
    tally = Tally()
    tally(DownloadProgress("u", 2048))
    for status in ("ok", "ok", "skipped", "failed"):
        tally(DownloadFinished(_result(status)))
    line = summary_line(tally)
    assert line.startswith("2 ok, 1 skipped, 1 failed; 2.0 KiB in ")


async def test_cli_on_a_terminal_shows_live_progress(tmp_path: Path) -> None:
    async with serve_files() as server:
        for i in range(3):
            server.add_generated(f"f{i}.bin", 200_000)
        urls = tmp_path / "urls.txt"
        urls.write_text(
            "".join(server.url(f"f{i}.bin", drip=0.001, drip_size=65536) + "\n" for i in range(3))
        )
        leader, follower = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "asyncconc",
            "download",
            str(urls),
            "-o",
            str(tmp_path / "out"),
            stdout=follower,
            stderr=follower,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
        )
        os.close(follower)
        chunks: list[bytes] = []
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.run_in_executor(None, os.read, leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(leader)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "3/3 files" in screen  # the live overall line
    assert "\x1b[" in screen  # drawn with terminal control codes
    assert "3 ok, 0 skipped, 0 failed" in screen
