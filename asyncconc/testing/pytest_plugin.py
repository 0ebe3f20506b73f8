"""pytest plugin: fixtures for testing download code offline.

Registered through the ``pytest11`` entry point, so any test suite in an
environment where asyncconc is installed gets:

``file_server``
    An :class:`~asyncconc.testing.FileServer` running on 127.0.0.1 for the
    test (function scope), empty: add files with ``add_bytes`` /
    ``add_generated`` and build URLs (with faults) with ``url(...)``.

``file_server_factory``
    An async callable ``await factory(root=None, files=None, delay=0.0)``
    starting more servers, all closed at the end of the test.

The fixtures are async, so they need pytest-asyncio (asyncio mode "auto",
or mark the tests with ``@pytest.mark.asyncio``). Without pytest-asyncio the
plugin registers nothing rather than breaking the host suite.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from asyncconc.testing._fileserver import FileServer, serve_files

__all__ = ["FileServerFactory"]

FileServerFactory = Callable[..., Awaitable[FileServer]]

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - nothing to offer without it
    _HAVE_PYTEST_ASYNCIO = False
else:
    _HAVE_PYTEST_ASYNCIO = True

if _HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def file_server() -> AsyncIterator[FileServer]:
        """A loopback file server for one test."""
        async with serve_files() as server:
            yield server

    @pytest_asyncio.fixture
    async def file_server_factory() -> AsyncIterator[FileServerFactory]:
        """Start extra servers (e.g. one per host); all close after the test."""
        async with contextlib.AsyncExitStack() as stack:

            async def start(
                root: str | os.PathLike[str] | None = None,
                files: Mapping[str, bytes] | None = None,
                delay: float = 0.0,
                **kwargs: Any,
            ) -> FileServer:
                return await stack.enter_async_context(
                    serve_files(root, files=files, delay=delay, **kwargs)
                )

            yield start
