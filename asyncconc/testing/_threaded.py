"""The loopback file server on its own event loop, in a background thread.

For code that blocks (``urllib``, threads, processes, a tk window, a
synchronous test calling ``asyncconc.cli.main``): the server needs a loop
that keeps running while the caller's thread is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from asyncconc.testing._fileserver import FileServer, serve_files
from asyncconc.testing._recording import DEFAULT_HISTORY

__all__ = ["serve_files_in_thread"]


@contextlib.contextmanager
def serve_files_in_thread(
    root: str | os.PathLike[str] | None = None,
    *,
    files: Mapping[str, bytes] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    delay: float = 0.0,
    history: int | None = DEFAULT_HISTORY,
    tls: bool = False,
    stop_timeout: float = 10.0,
    **options: Any,
) -> Iterator[FileServer]:
    """:func:`serve_files` in a daemon thread; a plain (sync) context manager.

    ``options`` are passed to :func:`serve_files` (``faults``,
    ``idle_timeout``, ...).

    The server is listening when this yields and is stopped (its thread
    joined, up to ``stop_timeout`` seconds) on exit. Adding files from the
    caller's thread (``add_bytes``, ``add_generated``) is fine: the server
    only reads its table, and the request history and expectations take a
    lock. Raises :class:`RuntimeError` if it cannot start,
    chained to the reason (e.g. the port is taken).
    """
    ready = threading.Event()
    started: list[FileServer] = []
    failure: list[BaseException] = []
    control: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        stop = asyncio.Event()
        control.append((asyncio.get_running_loop(), stop))
        async with serve_files(
            root,
            files=files,
            host=host,
            port=port,
            delay=delay,
            history=history,
            tls=tls,
            **options,
        ) as server:
            started.append(server)
            ready.set()
            await stop.wait()

    def target() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="asyncconc-file-server", daemon=True)
    thread.start()
    ready.wait()
    if not started:
        thread.join(stop_timeout)
        raise RuntimeError("the file server did not start") from (failure[0] if failure else None)
    try:
        yield started[0]
    finally:
        loop, stop = control[0]
        with contextlib.suppress(RuntimeError):  # its loop already ended
            loop.call_soon_threadsafe(stop.set)
        thread.join(stop_timeout)
