"""asyncconc._forking.fork_server, in a real single-threaded program (_fork_probe)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

ROOT = Path(__file__).resolve().parents[2]


def _probe(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.pool._fork_probe", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    view: dict[str, Any] = json.loads(done.stdout)
    return view


def test_the_child_starts_clean() -> None:
    view = _probe()
    assert view.pop("report_fd").startswith("pipe:")  # kept: the server needs it
    assert view == {
        "forked": True,
        "wakeup_fd": -1,
        "sigterm_default": True,  # the program's handler is gone
        "sigint_default": True,  # back to KeyboardInterrupt
        "sigusr1_ignored": True,  # ignored stays ignored, as across exec
        "pdeathsig": signal.SIGKILL,
        "frozen": True,
        "socket_fd": "/dev/null",  # released, its number kept
        "status": 0,
    }


def test_nothing_forks_while_another_thread_runs() -> None:
    assert _probe("--thread") == {"forked": False}
