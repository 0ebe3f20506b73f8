"""Smoke test: ``python scenarios/divide_and_conquer.py --n 100000``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scenarios" / "divide_and_conquer.py"


def test_divide_and_conquer_checks_all_three_ways() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--n", "100000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1 + 2 + ... + 100,000 = 5,000,050,000" in out
    for label in ("one process", "8 x multiprocessing.Process + Queue", "LoopPool, 8 ranges"):
        assert label in out
    assert out.count("speedup") == 3
