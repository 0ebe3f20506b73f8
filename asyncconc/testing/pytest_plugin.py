"""pytest plugin: fixtures for testing download code offline.

Registered through the ``pytest11`` entry point under the name
``asyncconc`` (``pytest -p no:asyncconc`` turns it off), so any test suite
in an environment where asyncconc is installed gets:

``file_server``
    A :class:`~asyncconc.testing.FileServer` on 127.0.0.1 for one test,
    empty: add files with ``add_bytes`` / ``add_generated``, build URLs
    (with faults) with ``url(...)``. Its expectations
    (:meth:`~asyncconc.testing.FileServer.expect`) are verified after the
    test.

``file_server_module``, ``file_server_session``
    The same, shared by a module's or the whole session's tests.

``file_server_factory``
    ``factory(root=None, files=None, delay=0.0, **options)`` starts more
    servers (one per "host", say); all close after the test. It returns the
    server, so ``factory(...)`` works in a sync test and ``await``-less
    code alike.

Every server runs on its own event loop in a background thread
(:func:`~asyncconc.testing.serve_files_in_thread`). So the fixtures are
plain (synchronous) fixtures that work the same in synchronous tests,
asyncio tests in any loop scope (pytest-asyncio strict or auto mode, a
module-scoped loop with function-scoped fixtures or the reverse), anyio
tests on either backend, and blocking clients: no test's loop has to run
for the server to answer. Loading the plugin imports nothing but pytest;
aiohttp's server is imported when a fixture is first used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from asyncconc.testing._fileserver import FileServer

__all__ = [
    "FileServerFactory",
    "file_server",
    "file_server_factory",
    "file_server_module",
    "file_server_session",
]

FileServerFactory = Callable[..., "FileServer"]


@contextlib.contextmanager
def _serving(**options: Any) -> Iterator[FileServer]:
    from asyncconc.testing._threaded import serve_files_in_thread

    with serve_files_in_thread(**options) as server:
        yield server
        # After the test, while the server is still up: unmet expectations
        # fail the test that declared them (as an error in its teardown).
        server.verify()


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A loopback file server for one test."""
    with _serving() as server:
        yield server


@pytest.fixture(scope="module")
def file_server_module() -> Iterator[FileServer]:
    """A loopback file server shared by the tests of one module."""
    with _serving() as server:
        yield server


@pytest.fixture(scope="session")
def file_server_session() -> Iterator[FileServer]:
    """A loopback file server shared by every test of the session."""
    with _serving() as server:
        yield server


@pytest.fixture
def file_server_factory() -> Iterator[FileServerFactory]:
    """Start extra servers (e.g. one per host); all close after the test."""
    with contextlib.ExitStack() as stack:

        def start(
            root: str | os.PathLike[str] | None = None,
            files: Mapping[str, bytes] | None = None,
            delay: float = 0.0,
            **options: Any,
        ) -> FileServer:
            return stack.enter_context(_serving(root=root, files=files, delay=delay, **options))

        yield start
