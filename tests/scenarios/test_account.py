"""Smoke test: ``python scenarios/account.py`` with 20 small deposits."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scenarios" / "account.py"


def test_locks_give_the_right_balance_and_no_lock_loses_deposits() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--deposits", "20", "--processing", "0.005"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout

    def row(label: str) -> str:
        match = re.search(rf"^\s+{re.escape(label)}\s+[\d.]+ s\s+(.*)$", out, re.MULTILINE)
        assert match, f"no {label!r} row in:\n{out}"
        return match.group(1)

    assert row("threads + threading.Lock") == "balance 20 (right)"
    assert row("coroutines + asyncio.Lock") == "balance 20 (right)"
    # Every task reads 0 before any 5 ms pause ends: deterministic.
    assert row("coroutines, no lock") == "balance 1 (WRONG: lost 19)"
    assert row("threads, no lock").startswith("balance ")
    assert "overwrite each other" in out
