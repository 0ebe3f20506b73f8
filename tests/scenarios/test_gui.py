"""Smoke test: ``python scenarios/gui.py`` with and without a display."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gui_support import xvfb

SCRIPT = Path(__file__).resolve().parents[2] / "scenarios" / "gui.py"


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with xvfb() as name:
        yield name


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.gui
def test_auto_run_downloads_in_the_window_and_reports(display: str) -> None:
    done = run({**os.environ, "DISPLAY": display}, "--auto", "--files", "2")
    assert done.returncode == 0, done.stderr
    assert "2/2 files, button enabled again" in done.stdout
    assert "worst tk timer delay" in done.stdout
    assert "CPU used in 1 s idle" in done.stdout


def test_without_a_display_it_says_so_and_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = run(env, "--auto")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "needs a display" in done.stderr
