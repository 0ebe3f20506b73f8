"""Smoke test: ``python scenarios/distributed_processes.py --n 100000``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scenarios" / "distributed_processes.py"


def test_distributed_checks_the_managers_queue_and_dask_ways() -> None:
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
    assert "multiprocessing.managers queues on 127.0.0.1, 2 workers" in out
    if importlib.util.find_spec("distributed") is not None:
        assert "DaskPool on a LocalCluster of 2" in out
        assert out.count("speedup") == 3
    else:
        assert "pip install 'asyncconc[dask]'" in out
