"""``python -m asyncconc sum N``: in-process through ``cli.main`` and once as a child."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asyncconc.cli import main


def test_sum_prints_the_checked_total_and_the_speedup(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sum", "20000", "--workers", "2", "--chunks", "4", "--compare"])
    out = capsys.readouterr().out
    assert code == 0
    assert "sum 1..20000 = 200010000 (checked against N(N+1)/2)" in out
    assert "2 workers, 4 chunks" in out
    assert "speedup" in out


def test_sum_of_nothing_is_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sum", "0", "--workers", "1", "--loop", "asyncio"]) == 0
    assert "sum 1..0 = 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sum", "-1"], "N must be 0 or more"),
        (["sum", "ten"], "'ten' is not a whole number"),
        (["sum", "10", "--workers", "0"], "--workers must be at least 1"),
        (["sum", "10", "--workers", "two"], "'two' is not a whole number"),
        (["sum", "10", "--chunks", "0"], "--chunks must be at least 1"),
    ],
)
def test_sum_refuses_bad_input_with_its_usage_and_one_error_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("usage: python -m asyncconc sum ")
    assert [line for line in lines if "error:" in line] == [lines[-1]]
    assert lines[-1].startswith("python -m asyncconc sum: error: ")
    assert message in lines[-1]


def test_sum_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asyncconc", "sum", "100000", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "sum 1..100000 = 5000050000" in done.stdout
