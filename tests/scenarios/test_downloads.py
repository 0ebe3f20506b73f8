"""Smoke test: ``python scenarios/downloads.py`` with three small files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scenarios" / "downloads.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=100
    )


def seconds(out: str, label: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+) s", out, re.MULTILINE)
    assert match, f"no {label!r} row in:\n{out}"
    return float(match.group(1))


def test_four_strategies_fetch_every_file_and_coroutines_beat_sequential() -> None:
    done = run("--files", "3", "--min-delay", "0.3", "--max-delay", "0.4", "--size", "2048")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for strategy in ("sequential", "processes", "threads", "coroutines"):
        assert re.search(rf"^\s+{strategy}\s+[\d.]+ s\s+3/3 files$", out, re.MULTILINE), out
    total, longest = seconds(out, "(sum of delays)"), seconds(out, "(longest delay)")
    assert seconds(out, "sequential") >= total * 0.95
    # Generous: coroutines wait for the delays together, not one by one.
    assert seconds(out, "coroutines") < longest + 0.6 < total + 0.3


def test_bad_arguments_are_a_usage_error() -> None:
    done = run("--files", "0")
    assert done.returncode == 2
    assert "--files >= 1" in done.stderr
