"""Smoke test: ``python scenarios/gil.py --n 200000``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scenarios" / "gil.py"


def test_gil_scenario_times_threads_and_processes() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--n", "200000", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1 + 2 + ... + 200,000 with a Python loop:" in out
    for label in ("one thread", "2 threads", "2 processes (LoopPool, warm)", "start-up"):
        assert label in out
    assert out.count("speedup") == 3


def test_gil_scenario_refuses_a_bad_size() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--n", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--n and --workers must be at least 1" in done.stderr
