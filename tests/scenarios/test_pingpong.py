"""Smoke test: ``python scenarios/pingpong.py -n 4``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scenarios" / "pingpong.py"


def test_broken_version_prints_twice_as_much_and_the_others_alternate() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "-n", "4"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # Each variant prints its name, then its words on the next line.
    assert lines[0] == "processes, global counter (lesson):"
    assert sorted(lines[1].split()) == ["Ping"] * 4 + ["Pong"] * 4
    assert lines[2] == "coroutines + asyncio.Queue:"
    assert lines[3].split() == ["Ping", "Pong", "Ping", "Pong"]
    assert lines[4] == "processes + a pipe between them:"
    assert lines[5].split() == ["Ping", "Pong", "Ping", "Pong"]
    assert "Ping x4 + Pong x4 = 8 words, not 4" in done.stdout
    assert done.stdout.count("4 words, strictly alternating") == 2
