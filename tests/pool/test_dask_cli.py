"""``python -m asyncconc sum --scheduler``: against ``dask scheduler`` + ``dask worker``.

Both are started as real processes on 127.0.0.1, as a user would on two
machines; the sum runs as a third process. Skipped without the dask extra.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("distributed")


def _start(*argv: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(15)


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[str]:
    info = tmp_path / "scheduler.json"
    dash = ["--dashboard-address", "127.0.0.1:0"]
    sched = _start(
        "scheduler", "--host", "127.0.0.1", "--port", "0", *dash,
        "--scheduler-file", str(info), log=tmp_path / "scheduler.log",
    )  # fmt: skip
    worker: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            assert sched.poll() is None, (tmp_path / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.05)
        address: str = json.loads(info.read_text())["address"]
        worker = _start(
            "worker", address, "--host", "127.0.0.1", "--nthreads", "2",
            "--resources", "asyncconc-cpu=1", *dash, log=tmp_path / "worker.log",
        )  # fmt: skip
        yield address
    finally:
        if worker is not None:
            _stop(worker)
        _stop(sched)


@pytest.mark.slow
def test_sum_runs_on_a_dask_scheduler_and_worker(scheduler: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asyncconc", "sum", "1000000", "--scheduler", scheduler],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "sum 1..1000000 = 500000500000 (checked against N(N+1)/2)" in out.stdout
    assert f"1 workers on the Dask cluster at {scheduler}" in out.stdout


def test_unreachable_scheduler_is_one_line_and_exit_1(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asyncconc", "sum", "10", "--scheduler", "tcp://127.0.0.1:9",
         "--connect-timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("error: sum: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert "Traceback" not in out.stderr


def test_workers_with_a_dask_option_is_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asyncconc", "sum", "10", "--local-cluster", "2", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--workers is for the local pool" in out.stderr
