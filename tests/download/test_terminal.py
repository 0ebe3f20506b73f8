"""``download`` on a real terminal: a pty of a set size, read through a VT100 screen.

Each test runs the CLI as a child process whose stdout and stderr are a
pseudo-terminal, against a server on the test's loop, and feeds what the
child wrote to ``pyte`` (a terminal emulator), so the assertions are about
what a user would see on the screen, not only about the bytes.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

import pyte  # type: ignore[import-untyped,unused-ignore]
from rich.cells import cell_len

from asyncconc.testing import FileServer


@dataclass
class TerminalRun:
    code: int
    raw: str  # everything the child wrote
    screen: list[str]  # the screen at the end, one string per row

    def __str__(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen if line.strip())


async def run_on_terminal(
    *args: str, columns: int = 100, lines: int = 24, timeout: float = 60
) -> TerminalRun:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncconc",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**env, "TERM": "xterm"},
    )
    os.close(follower)
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []

    async def read_all() -> None:
        while True:
            try:
                data = await loop.run_in_executor(None, os.read, leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    try:
        await asyncio.wait_for(read_all(), timeout)
        code = await asyncio.wait_for(proc.wait(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(leader)
    raw = b"".join(chunks).decode("utf-8", errors="replace")
    screen = pyte.Screen(columns, lines)
    stream = pyte.Stream(screen)
    # The pty turns "\n" into "\r\n" (onlcr), as a terminal expects.
    stream.feed(raw)
    return TerminalRun(code, raw, list(screen.display))


def write_list(path: Path, *lines: str) -> Path:
    path.write_bytes("".join(line + "\n" for line in lines).encode())
    return path


async def test_a_terminal_gets_the_live_display(server: FileServer, tmp_path: Path) -> None:
    for i in range(3):
        server.add_generated(f"f{i}.bin", 200_000)
    urls = write_list(
        tmp_path / "urls.txt",
        *(server.url(f"f{i}.bin", drip=0.001, drip_size=65536) for i in range(3)),
    )
    run = await run_on_terminal("download", str(urls), "-o", str(tmp_path / "out"))
    assert run.code == 0, run
    assert "\x1b[?25l" in run.raw  # drawn with terminal control codes
    assert run.raw.endswith("\r\n")
    shown = str(run).splitlines()
    assert shown[0].startswith("all 3/3 files"), shown
    assert shown[1].startswith("3 ok, 0 skipped, 0 failed; 585.9 KiB in"), shown
    assert "\x1b[?25h" in run.raw  # the cursor is shown again


async def test_bracket_text_in_names_and_urls_is_shown_literally(
    server: FileServer, tmp_path: Path
) -> None:
    server.add_bytes("f001.bin", b"x" * 5000)
    server.add_bytes("b.bin", b"y" * 20_000)
    urls = write_list(
        tmp_path / "l.txt",
        server.url("f001.bin") + " x[/y].bin",
        server.base_url + "/nope[/x]",
        server.url("b.bin", drip=0.05, drip_size=1024) + " [red]b.bin",
    )
    out = tmp_path / "o"
    run = await run_on_terminal("download", str(urls), "-o", str(out))
    assert "Traceback" not in run.raw, run
    assert run.code == 1, run  # the 404
    assert (out / "x[/y].bin").read_bytes() == b"x" * 5000
    assert (out / "[red]b.bin").stat().st_size == 20_000
    shown = str(run)
    assert "nope[/x]: HTTP 404" in shown, shown
    assert "2 ok, 0 skipped, 1 failed" in shown, shown
    # The name was drawn as text while it downloaded, not as a red "b.bin".
    assert "[red]b.bin" in run.raw
    assert "\x1b[31mb.bin" not in run.raw


async def test_control_characters_in_a_list_are_shown_not_obeyed(tmp_path: Path) -> None:
    listing = write_list(tmp_path / "e.txt", "\x1b[2J\x1b[H\x1b[32mALL FILES VERIFIED OK")
    for extra in ([], ["-q"]):
        run = await run_on_terminal("download", str(listing), "-o", str(tmp_path / "o"), *extra)
        assert run.code == 1, run
        assert "\x1b[2J" not in run.raw
        assert "\x1b[32m" not in run.raw
        rows = [row for row in run.screen if "ALL" in row]
        assert len(rows) == 1, run
        assert "\\x1b[2J\\x1b[H\\x1b[32mALL" in rows[0], run
        assert "0 ok, 0 skipped, 1 failed" in str(run)


_FRAME_START = re.compile(r"\r(?:\x1b\[\d+A)?\x1b\[J")
_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def test_at_40_columns_no_live_line_wraps_and_the_end_is_clean(
    server: FileServer, tmp_path: Path
) -> None:
    names = [f"a-long-folder-name/and-a-long-file-name-{i:02d}.tar.gz" for i in range(12)]
    for name in names:
        server.add_generated(name.rsplit("/", 1)[1], 100_000)
    urls = write_list(
        tmp_path / "l.txt",
        *(
            server.url(name.rsplit("/", 1)[1], drip=0.04, drip_size=4096) + f" {name}"
            for name in names
        ),
        server.base_url + "/missing-file-with-a-long-name-that-goes-on.bin",
    )
    run = await run_on_terminal(
        "download", str(urls), "-o", str(tmp_path / "o"), "-j", "12", columns=40, lines=24
    )
    assert run.code == 1, run
    frames = _FRAME_START.split(run.raw)
    assert len(frames) > 3, "expected several live frames"
    for frame in frames:
        for line in _CSI.sub("", frame).replace("\r", "").split("\n"):
            if line.startswith(("failed ", "12 ok,")) or not line:
                continue  # printed once, above the live lines: the terminal may wrap it
            assert cell_len(line) < 40, repr(line)
    shown = [row.rstrip() for row in run.screen if row.strip()]
    # Only the failure, the final overall line and the summary are left.
    assert not any("%" in row or "more downloading" in row for row in shown), shown
    assert any(row.startswith("13/13 ") for row in shown), shown
    assert "12 ok, 0 skipped, 1 failed" in str(run).replace("\n", "")
