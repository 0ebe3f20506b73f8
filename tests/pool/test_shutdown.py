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


HOG_SCRIPT = """
import asyncio
import glob
import sys
import time

from asyncconc import LoopPool, run
from tests.pool import _tasks


async def main() -> None:
    marker = sys.argv[1]
    async with LoopPool(2) as pool:
        hogs = [asyncio.ensure_future(pool.submit(_tasks.gil_hog, marker)) for _ in range(2)]
        deadline = time.monotonic() + 30
        while len(glob.glob(marker + ".*")) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # both workers are about to enter the C call
        await asyncio.sleep(0.2)
        print(" ".join(map(str, pool.process_pids())), flush=True)
        await asyncio.gather(*hogs)


if __name__ == "__main__":
    run(main())
"""


async def test_sigkilled_owner_takes_workers_holding_the_gil_within_2_s(tmp_path: Path) -> None:
    # Workers in a long C call holding the GIL cannot run a watchdog thread:
    # only the kernel (PR_SET_PDEATHSIG chained owner -> fork server ->
    # worker) ends them in time.
    script = tmp_path / "hog_owner.py"
    script.write_text(HOG_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    marker = tmp_path / "hog"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(marker),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    async with asyncio.timeout(60):
        line = await child.stdout.readline()
    started = [int(pid) for pid in line.split()]
    family = [p.pid for p in psutil.Process(child.pid).children(recursive=True)]
    assert len(started) == 3, line  # the fork server and two workers
    assert set(started) <= set(family)
    hogging = {int(path.suffix[1:]) for path in tmp_path.glob("hog.*")}
    assert hogging == set(started[1:])
    child.kill()
    async with asyncio.timeout(30):
        await child.wait()
    assert await asyncio.to_thread(wait_gone, family, 2.0) == []


MAIN_SCRIPT = """
import asyncio
import os
import signal
import sys

with open(sys.argv[1], "a") as log:
    log.write(__name__ + "\\n")

from asyncconc import LoopPool, run
from tests.pool import _tasks


async def main() -> None:
    async with LoopPool(2, retries=1) as pool:  # a task may meet a worker just killed
        for _ in range(3):
            victim = await pool.submit(_tasks.pid)
            os.kill(victim, signal.SIGKILL)
        print(sum(await asyncio.gather(*(pool.submit(_tasks.inc, i) for i in range(10)))))


if __name__ == "__main__":
    run(main())
"""


async def test_the_main_module_top_level_runs_once_per_pool(tmp_path: Path) -> None:
    script = tmp_path / "main_once.py"
    script.write_text(MAIN_SCRIPT)
    log = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(log), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, _ = await child.communicate()
    assert out.strip() == b"55"
    # The owner runs it as __main__; the pool's fork server imports it once;
    # two workers and three replacements are forks and do not run it again.
    assert log.read_text().split() == ["__main__", "__mp_main__"]
