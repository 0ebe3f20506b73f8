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


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    del config
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if importlib.util.find_spec("uvloop") is not None and item.path.name != "test_cli.py":
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(autouse=True)
async def _loop_debug() -> None:
    """Debug mode: unawaited coroutines and non-threadsafe calls get caught."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 1.0  # hashing a batch on the loop is expected
