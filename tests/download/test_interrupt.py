"""Issue 7 item 2: after Ctrl-C the summary and the report tell the truth.

A real child process downloads a list of a few hundred files from a slow-ish
loopback server and is interrupted in the middle, once its own output shows
that files are finishing and the slow ones have data in their ``.part``.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from asyncconc.testing import FileServer
from tests.conftest import start_cli, wait_for_size

SMALL = 300
BIG = 4


@pytest.mark.slow
@pytest.mark.parametrize("workers", [None, 2])
async def test_an_interrupted_run_reports_every_line_once_and_truthfully(
    server: FileServer, tmp_path: Path, workers: int | None
) -> None:
    lines: list[str] = []
    sizes: dict[str, int] = {}
    for i in range(BIG):  # first, so that they are in flight when the signal comes
        served = server.add_generated(f"big{i}.bin", 4 * 1024 * 1024)
        sizes[served.name] = served.size
        lines.append(server.url(served.name, drip=0.05, drip_size=65536))  # >= 3 s each
    for i in range(SMALL):
        served = server.add_generated(f"s{i:03d}.bin", 20_000)
        sizes[served.name] = served.size
        lines.append(server.url(served.name, delay=0.01))
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    extra = ["--workers", str(workers)] if workers else []
    proc = await start_cli("download", urls, "-o", out, "-j", "12", "--report", report, *extra)
    assert proc.stdout is not None
    try:
        ok_lines = 0
        while ok_lines < SMALL // 3:
            text = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert text, "the run ended before it could be interrupted"
            ok_lines += text.startswith(b"ok")
        for i in range(BIG):
            await wait_for_size(out / f"big{i}.bin.part", 1)
        proc.send_signal(signal.SIGINT)
        rest, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    summary = rest.decode().splitlines()[-1]
    entries: list[dict[str, Any]] = json.loads(report.read_text("utf-8"))

    # One entry per line, in list order.
    assert [e["line"] for e in entries] == list(range(1, len(lines) + 1))
    assert [e["url"] for e in entries] == lines
    # The summary's counts are the report's, and add up to the lines.
    counted = Counter(e["status"] for e in entries)
    match = re.match(r"interrupted: (\d+) ok, (\d+) skipped, (\d+) failed", summary)
    assert match, summary
    assert tuple(map(int, match.groups())) == (counted["ok"], counted["skipped"], counted["failed"])
    assert sum(counted.values()) == len(lines)
    assert 0 < counted["ok"] < len(lines)

    on_disk = {p.name for p in out.iterdir()}
    for entry in entries:
        path = entry["path"]
        if path is not None and path in on_disk:
            # Complete on disk (renamed from .part only when whole): ok.
            assert entry["status"] == "ok", entry
            assert (out / path).stat().st_size == sizes[path]
        if entry["status"] == "ok":
            assert path in on_disk, entry
        else:
            assert entry["error"], entry
            assert "Error" not in entry["error"], entry
    # Every .part left is named by its URL's entry, and only those.
    parts = {name for name in on_disk if name.endswith(".part")}
    assert parts >= {f"big{i}.bin.part" for i in range(BIG)}
    assert {e["part"] for e in entries if e["part"]} == parts
    for entry in entries:
        if entry["part"]:
            assert entry["status"] == "failed"
            assert entry["part"] == entry["path"] + ".part"
