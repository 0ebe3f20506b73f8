"""Downloads sharded over the worker processes of a :class:`~asyncconc.LoopPool`.

On loopback (and on fast links) one event loop's CPU is the limit, so
``download --workers W`` runs W downloaders, one per worker process, each
with its own event loop and HTTP session, while the parent keeps everything
a user sees: the names, the progress, the results and the report.

How the guarantees of a single-process run are kept:

* **Names and collisions.** Every name is claimed from the one
  :class:`NameAllocator` in the parent, over a private Unix socket. Lines are
  sharded by their first-choice name, so lines that want the same name sit
  in the same worker, in list order, and collisions resolve exactly as they
  do in one process; a server-given (Content-Disposition) name is claimed
  first-come, as it is in one process.
* **.part, resume, retries, exit codes**: each worker runs the ordinary
  :class:`Downloader`; nothing about a single URL changes.
* **Ctrl-C / cancellation**: the pool's workers are stopped with the run;
  what each had written stays in its ``.part`` file (with the validator
  sidecar, so a later run resumes). A worker that dies fails only the URLs
  it had not finished, with a clear error; the others are unaffected.

The socket carries newline-delimited JSON: ``hello``, ``claim``/``release``
(answered by the parent), ``started``, ``progress`` and ``finished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from asyncconc.downloader._index import INDEX_NAME
from asyncconc.downloader._models import (
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadRequest,
    DownloadResult,
    DownloadStarted,
)
from asyncconc.downloader._naming import NameAllocator, choose_name
from asyncconc.downloader._pipeline import Downloader

__all__ = ["run_sharded", "shard_requests"]

_Item = tuple[int, DownloadRequest]
# Seconds the workers get to save their .part files when the run is cancelled.
STOP_GRACE = 3.0


def shard_requests(requests: Sequence[DownloadRequest], shards: int) -> list[list[_Item]]:
    """Split ``requests`` into ``shards`` lists, keeping same-name lines together.

    Each first-choice name (the list's, else the URL's) goes to the shard
    with the fewest lines so far; order inside a shard is list order.
    """
    out: list[list[_Item]] = [[] for _ in range(shards)]
    home: dict[str, int] = {}
    for index, request in enumerate(requests):
        wanted = request.name.as_posix() if request.name else choose_name(request.url)
        key = wanted.casefold()
        shard = home.get(key)
        if shard is None:
            shard = home[key] = min(range(shards), key=lambda k: len(out[k]))
        out[shard].append((index, request))
    return [shard for shard in out if shard]


# -- worker side ---------------------------------------------------------------


class _RemoteNames:
    """A NameClaimer that asks the parent's allocator."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: dict[int, asyncio.Future[str]] = {}
        self._next = 0

    async def aclaim(self, wanted: PurePosixPath) -> PurePosixPath:
        self._next += 1
        ident = self._next
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        _send(self._writer, {"op": "claim", "id": ident, "path": wanted.as_posix()})
        try:
            return PurePosixPath(await future)
        finally:
            self._pending.pop(ident, None)

    def release(self, path: PurePosixPath) -> None:
        _send(self._writer, {"op": "release", "path": path.as_posix()})

    async def read_answers(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            future = self._pending.get(message["id"])
            if future is not None and not future.done():
                future.set_result(message["path"])
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("lost the parent process"))


def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")


async def download_shard(
    address: str,
    shard: int,
    dest: str,
    items: list[_Item],
    options: dict[str, Any],
    index_bytes: int | None = None,
) -> int:
    """Worker side: download ``items`` and report everything to the parent.

    Runs on the worker's own event loop (a coroutine function task of the
    pool). Returns how many results were sent. ``index_bytes``: the size of
    the folder's index when the run began (records other workers add must
    not change this one's names).
    """
    reader, writer = await asyncio.open_unix_connection(address)
    names = _RemoteNames(writer)
    answers = asyncio.create_task(names.read_answers(reader))
    _send(writer, {"op": "hello", "shard": shard})

    def on_event(event: DownloadEvent) -> None:
        if isinstance(event, DownloadProgress):
            _send(writer, {"op": "progress", "url": event.url, "nbytes": event.nbytes})
        elif isinstance(event, DownloadStarted):
            _send(
                writer,
                {
                    "op": "started",
                    "url": event.url,
                    "path": event.path,
                    "total": event.total,
                    "resumed_from": event.resumed_from,
                },
            )

    def leftover(local: int, result: DownloadResult) -> None:
        # Cancelled: what was in flight is sent as it stands (the parent
        # reports it; the transport flushes it before it closes).
        _send(writer, {"op": "finished", "index": items[local][0], "result": result.as_dict()})

    sent = 0
    try:
        downloader = Downloader(dest, on_event=on_event, **options)
        requests = (r for _, r in items)
        async with (
            downloader,
            contextlib.aclosing(
                downloader._run(requests, names=names, leftover=leftover, index_bytes=index_bytes)
            ) as results,
        ):
            async for local, result in results:
                _send(
                    writer, {"op": "finished", "index": items[local][0], "result": result.as_dict()}
                )
                sent += 1
                await writer.drain()
        return sent
    finally:
        answers.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# -- parent side ---------------------------------------------------------------


@dataclass(slots=True)
class _Parent:
    on_event: Callable[[DownloadEvent], None]
    names: NameAllocator = field(default_factory=NameAllocator)
    results: asyncio.Queue[tuple[int, DownloadResult]] = field(default_factory=asyncio.Queue)
    connected: set[int] = field(default_factory=set)
    closed: set[int] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_all_closed(self) -> None:
        """Until every worker that connected has hung up."""
        while not self.connected <= self.closed:
            self.changed.clear()
            await self.changed.wait()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        shard: int | None = None
        try:
            while line := await reader.readline():
                message = json.loads(line)
                op = message["op"]
                if op == "progress":
                    self.on_event(DownloadProgress(message["url"], message["nbytes"]))
                elif op == "started":
                    del message["op"]
                    self.on_event(DownloadStarted(**message))
                elif op == "finished":
                    result = DownloadResult(**message["result"])
                    self.on_event(DownloadFinished(result))
                    self.results.put_nowait((message["index"], result))
                elif op == "claim":
                    path = self.names.claim(PurePosixPath(message["path"]))
                    _send(writer, {"id": message["id"], "path": path.as_posix()})
                elif op == "release":
                    self.names.release(PurePosixPath(message["path"]))
                elif op == "hello":
                    shard = message["shard"]
                    self.connected.add(shard)
        except (ConnectionError, ValueError, KeyError, TypeError):
            pass  # a worker that died mid-line: its URLs are failed below
        finally:
            if shard is not None:
                self.closed.add(shard)
            self.changed.set()
            writer.close()


async def run_sharded(
    requests: Sequence[DownloadRequest],
    dest: Path,
    *,
    workers: int,
    on_event: Callable[[DownloadEvent], None],
    options: dict[str, Any],
    loop: str = "auto",
    leftover: Callable[[int, DownloadResult], None] | None = None,
) -> AsyncGenerator[tuple[int, DownloadResult], None]:
    """Download ``requests`` over ``workers`` processes; yield (index, result).

    ``options`` are :class:`Downloader` keyword options; ``concurrency`` is
    the total, split evenly over the workers. ``leftover``: as for
    ``Downloader._run``, the results the workers sent while being stopped.
    """
    from asyncconc.pool import LoopPool  # the pool is only needed here

    shards = shard_requests(requests, workers)
    per_worker = dict(options)
    total = int(per_worker.pop("concurrency", 16))
    per_worker["concurrency"] = max(1, -(-total // max(1, len(shards))))
    parent = _Parent(on_event)
    reported: set[int] = set()
    index_bytes = _index_size(dest)
    with tempfile.TemporaryDirectory(prefix="asyncconc-") as tmp:
        address = os.path.join(tmp, "names.sock")
        server = await asyncio.start_unix_server(parent.serve, address)
        async with server, LoopPool(max(1, len(shards)), concurrency=1, loop=loop) as pool:
            tasks = {
                asyncio.create_task(
                    pool.submit(
                        download_shard, address, k, str(dest), shard, per_worker, index_bytes
                    )
                ): k
                for k, shard in enumerate(shards)
            }
            try:
                while True:
                    while not parent.results.empty():
                        index, result = parent.results.get_nowait()
                        reported.add(index)
                        yield index, result
                    finished = {
                        k
                        for task, k in tasks.items()
                        if k in parent.closed or (task.done() and k not in parent.connected)
                    }
                    if len(finished) == len(shards) and parent.results.empty():
                        break
                    parent.changed.clear()
                    waiter = asyncio.create_task(parent.changed.wait())
                    getter = asyncio.create_task(parent.results.get())
                    try:
                        await asyncio.wait(
                            {waiter, getter, *tasks}, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        waiter.cancel()
                        getter.cancel()
                    if getter.done() and not getter.cancelled():
                        index, result = getter.result()
                        reported.add(index)
                        yield index, result
                # A shard whose worker died: fail what it had not finished.
                for task, k in tasks.items():
                    error = await _shard_error(task)
                    for index, request in shards[k]:
                        if index not in reported:
                            result = DownloadResult.unfinished(
                                request, error or "the worker process stopped"
                            )
                            on_event(DownloadFinished(result))
                            reported.add(index)
                            yield index, result
            finally:
                # Cancelling a submit cancels the shard coroutine in its
                # worker; give the workers a moment to unwind (each download
                # saves what it holds to its .part) before the pool stops them.
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
                unwound = asyncio.create_task(parent.wait_all_closed())
                await asyncio.wait({unwound}, timeout=STOP_GRACE)
                unwound.cancel()
                while leftover is not None and not parent.results.empty():
                    index, result = parent.results.get_nowait()
                    if index not in reported:
                        reported.add(index)
                        leftover(index, result)


def _index_size(dest: Path) -> int:
    try:
        return os.stat(dest / INDEX_NAME).st_size
    except OSError:
        return 0


async def _shard_error(task: asyncio.Task[int]) -> str | None:
    await asyncio.wait({task})
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return None if exc is None else f"worker process failed: {exc}"
