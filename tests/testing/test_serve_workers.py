"""``serve --workers N``: N processes on one port, supervised, gone with the master."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest


@pytest.fixture
def master(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    (tmp_path / "a.txt").write_bytes(b"hello")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asyncconc",
            "serve",
            str(tmp_path),
            "--port",
            "0",
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "with 2 worker processes" in line
        yield proc, line.split(" at ")[1].split()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def workers_of(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children()


def get(base: str) -> bytes:
    with urllib.request.urlopen(base + "a.txt", timeout=30) as response:
        return bytes(response.read())


def test_a_killed_worker_is_replaced_and_ctrl_c_stops_all(
    master: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base = master
    assert proc.stdout is not None
    first = workers_of(proc)
    assert len(first) == 2
    assert all(get(base) == b"hello" for _ in range(20))
    os.kill(first[0].pid, signal.SIGKILL)
    assert f"server worker {first[0].pid} exited" in proc.stdout.readline()
    assert get(base) == b"hello"
    children = workers_of(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_workers_die_with_a_sigkilled_master(master: tuple[subprocess.Popen[str], str]) -> None:
    proc, base = master
    children = workers_of(proc)
    assert get(base) == b"hello"
    proc.kill()
    proc.wait(30)
    _, alive = psutil.wait_procs(children, timeout=5)  # PR_SET_PDEATHSIG: the kernel's job
    assert alive == []
