"""Shared fixtures: loopback file servers, a destination folder, CLI runners.

Network tests use :func:`asyncconc.testing.serve_files` on 127.0.0.1 (port
0), never the internet.

``server``
    A file server on the test's own event loop, for library-level tests and
    for tests that run the CLI in a child process.
``threaded_server``
    The same server on its own loop in a background thread, for tests that
    call the synchronous ``asyncconc.cli.main`` in-process, and for tests that
    must see every task on the test's loop (no server tasks mixed in).
``dest``
    ``tmp_path / "out"`` (not created: the downloader creates it).
``run_cli``
    ``run_cli(*argv)`` runs ``asyncconc.cli.main`` in-process and returns the
    exit code with what it printed.
:func:`start_cli` / :func:`run_cli_process`
    ``python -m asyncconc ...`` as a real child process.
:func:`wait_for_size`
    Wait until a file a child process writes holds some bytes.
:func:`serve_handler`
    A one-route aiohttp server on 127.0.0.1 for answers the file server
    cannot script (what the folder holds while a request is answered, 304s).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest
from aiohttp import web

from asyncconc.cli import main
from asyncconc.testing import FileServer, serve_files, serve_files_in_thread

__all__ = [
    "CliRun",
    "files_under",
    "run_cli_process",
    "serve_handler",
    "start_cli",
    "wait_for_size",
]


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    async with serve_files() as srv:
        yield srv


@pytest.fixture
def threaded_server() -> Iterator[FileServer]:
    """A file server running on its own loop in a daemon thread."""
    with serve_files_in_thread(stop_timeout=30) as srv:
        yield srv


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "out"


@contextlib.asynccontextmanager
async def serve_handler(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """``handler`` answering every method on ``/{name}``; yields the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{name}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        sockets = getattr(site._server, "sockets", None) or []
        yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


def files_under(root: Path) -> set[str]:
    """Every file (and symlink) below ``root``, as POSIX paths relative to it."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(root):
        # The downloader's record of what it saved (downloader/_index.py).
        files = [f for f in files if f != ".asyncconc-index.jsonl"]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            found.add(Path(folder, name).relative_to(root).as_posix())
    return found


@dataclass(frozen=True)
class CliRun:
    """How one CLI run ended."""

    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """Run ``asyncconc.cli.main(argv)`` in-process (call it from sync tests)."""

    def run(*argv: str | os.PathLike[str]) -> CliRun:
        capsys.readouterr()
        code = main([os.fspath(a) for a in argv])
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    return env


async def start_cli(
    *argv: str | os.PathLike[str],
    cwd: Path | None = None,
    stdin: int | None = asyncio.subprocess.DEVNULL,
) -> asyncio.subprocess.Process:
    """Start ``python -m asyncconc ARGV`` with stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncconc",
        *[os.fspath(a) for a in argv],
        cwd=cwd,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
    )


async def run_cli_process(
    *argv: str | os.PathLike[str],
    cwd: Path | None = None,
    input: bytes | None = None,
    timeout: float = 60.0,
) -> CliRun:
    """Run ``python -m asyncconc ARGV`` to completion (killed after ``timeout``)."""
    proc = await start_cli(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return CliRun(proc.returncode, out.decode(), err.decode())


async def wait_for_size(path: Path, size: int, timeout: float = 30.0) -> None:
    """Wait until ``path`` holds at least ``size`` bytes (files are the sync point)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if path.stat().st_size >= size:
                return
        except FileNotFoundError:
            pass
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes"
        await asyncio.sleep(0.02)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def wait_until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture(autouse=True, scope="module")
def _collect_at_module_end() -> Iterator[None]:
    """Finalise what this module's tests left for the garbage collector, here.

    An unclosed socket or transport warns (an error here) when it is
    collected, which may be in any later test: CI once failed an account
    test on a socket some earlier module had left open. Collecting after
    each module makes such a leak fail in the module that made it.
    """
    yield
    gc.collect()
