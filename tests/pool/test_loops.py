"""The caller's side of LoopPool on both event loops, with loop debug on."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncconc import LoopPool, WorkerCrashedError, run
from tests.pool import _tasks


async def _exercise(marker: Path) -> list[object]:
    seen: list[object] = []
    async with LoopPool(2) as pool:
        seen.append(await pool.submit(_tasks.add, 1, 2))
        seen.append(await pool.submit(_tasks.async_add, 3, 4))
        seen.append(sum([x async for x in pool.map(_tasks.inc, range(10_000))]))
        try:
            await pool.submit(_tasks.boom, 3)
        except _tasks.TaskFailedError as exc:
            seen.append(type(exc).__name__)
        try:
            await pool.submit(_tasks.kill_self, str(marker))
        except WorkerCrashedError:
            seen.append("crashed")
        seen.append(await pool.submit(_tasks.inc, 0))
    return seen


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pool_works_from_either_loop_in_debug_mode(loop: str, tmp_path: Path) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    seen = run(_exercise(tmp_path / "pid"), loop=loop, debug=True)
    assert seen == [3, 7, sum(range(1, 10_001)), "TaskFailedError", "crashed", 1]
