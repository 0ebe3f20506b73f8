"""The one-shot :func:`download`: one process, or sharded over worker processes.

It sits above both :mod:`._pipeline` (one event loop) and :mod:`._sharded`
(worker processes, whose workers run the pipeline's :class:`Downloader`), so
neither of those imports the other's caller: the modules form a chain
(``_sharded`` -> ``_pipeline``), not a cycle.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

from asyncconc.downloader._models import DownloadResult
from asyncconc.downloader._pipeline import (
    Downloader,
    DownloaderOptions,
    UrlLike,
    _as_request,
    _ignore,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = ["download"]


async def download(
    urls: Iterable[UrlLike],
    dest: str | os.PathLike[str] = ".",
    *,
    session: aiohttp.ClientSession | None = None,
    concurrency: int = 16,
    workers: int | None = None,
    **options: Unpack[DownloaderOptions],
) -> list[DownloadResult]:
    """Download ``urls`` into ``dest``; per-URL failures are results, in input order.

    Takes the options of :class:`Downloader`. A ``session`` you pass is
    used and left open.

    ``workers``: shard the URLs over that many worker processes of a
    :class:`~asyncconc.LoopPool`, each with its own event loop and session
    (``concurrency`` is then the total over all of them). Names, collisions,
    ``.part`` files and results behave exactly as in one process;
    ``on_event`` still runs here, in the calling process. A ``session``
    cannot cross processes, so it cannot be combined with ``workers``.
    """
    if workers is None:
        async with Downloader(
            dest, session=session, concurrency=concurrency, **options
        ) as downloader:
            return await downloader.download(urls)
    if session is not None:
        raise ValueError("a session cannot be shared with worker processes; drop session=")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    from asyncconc.downloader._sharded import run_sharded  # the pool only when asked

    on_event = options.pop("on_event", None) or _ignore
    Downloader(dest, concurrency=concurrency, **options)  # validates the options here
    requests = [_as_request(u) for u in urls]
    os.makedirs(dest, exist_ok=True)
    results: dict[int, DownloadResult] = {}
    items = run_sharded(
        requests,
        Path(dest),
        workers=workers,
        on_event=on_event,
        options={"concurrency": concurrency, **options},
    )
    async with contextlib.aclosing(items):
        async for index, result in items:
            results[index] = result
    return [results[i] for i in sorted(results)]
