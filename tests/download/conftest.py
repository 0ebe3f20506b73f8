"""Downloader tests run on the default asyncio loop and on uvloop, in debug mode.

The CLI tests run the downloader in child processes (each with its own
loop), so their in-test loop only hosts the file server: asyncio is enough.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Mapping

import pytest

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
# Modules whose downloads run in child processes: one in-test loop is enough.
_CHILD_PROCESS_MODULES = frozenset(
    {
        "test_cli.py",
        "test_sharded.py",
        "test_spread.py",
        "test_interrupt.py",
        "test_limits.py",
        "test_rerun.py",
        "test_terminal.py",
    }
)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    del config
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if (
        importlib.util.find_spec("uvloop") is not None
        and item.path.name not in _CHILD_PROCESS_MODULES
    ):
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(autouse=True)
async def _loop_debug() -> None:
    """Debug mode: unawaited coroutines and non-threadsafe calls get caught."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 1.0  # hashing a batch on the loop is expected
