"""Workers never outlive the process that owns the pool: Ctrl-C and SIGKILL.

Each test runs a small script in a child process; the script starts a pool,
prints its worker pids once they have run a task, and blocks on a long task.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # types-psutil is optional
import pytest

from tests.pool._support import wait_gone

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio
import sys

from asyncconc import LoopPool, run
from tests.pool import _tasks


async def main() -> None:
    async with LoopPool(2) as pool:
        await asyncio.gather(*(pool.submit(_tasks.pid) for _ in range(8)))
        print(" ".join(map(str, pool.worker_pids())), flush=True)
        await asyncio.gather(*(pool.submit(_tasks.sleep_then, 60, None) for _ in range(2)))


if __name__ == "__main__":
    try:
        run(main())
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
"""


async def _start(tmp_path: Path) -> tuple[asyncio.subprocess.Process, list[int]]:
    script = tmp_path / "owner.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, as in a terminal
    )
    assert child.stdout is not None
    async with asyncio.timeout(60):
        line = await child.stdout.readline()
    pids = [int(pid) for pid in line.split()]
    assert len(pids) == 2, line
    return child, pids


@pytest.mark.parametrize("target", ["owner", "process group"])
async def test_ctrl_c_stops_the_owner_and_leaves_no_worker(tmp_path: Path, target: str) -> None:
    child, workers = await _start(tmp_path)
    if target == "owner":
        child.send_signal(signal.SIGINT)
    else:  # what a terminal's Ctrl-C does: every process of the group gets it
        os.killpg(child.pid, signal.SIGINT)
    async with asyncio.timeout(30):
        out, _ = await child.communicate()
    assert child.returncode == 130
    assert b"interrupted" in out
    assert await asyncio.to_thread(wait_gone, workers, 15) == []


async def test_sigkilled_owner_leaves_no_process_behind(tmp_path: Path) -> None:
    child, workers = await _start(tmp_path)
    # Every descendant: the workers, the fork server, the resource tracker.
    family = [p.pid for p in psutil.Process(child.pid).children(recursive=True)]
    assert set(workers) <= set(family)
    child.kill()
    async with asyncio.timeout(30):
        await child.wait()
    assert await asyncio.to_thread(wait_gone, family, 15) == []
