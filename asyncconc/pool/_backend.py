"""The calls every pool backend offers: :class:`LoopPool` and :class:`DaskPool`.

Code written against :class:`PoolBackend` runs on one machine or on a Dask
cluster unchanged; ``tests/pool/test_dask.py`` has mypy check that both
classes satisfy it and runs the same calls through both. Both backends' ``map``
sizes its chunks and its window of chunks in flight with :class:`ChunkPolicy`
and :func:`map_window`, so laziness and batching mean the same on both; each
backend keeps its own loop over its own kind of in-flight handle (a future
resolved by the worker protocol, a task awaiting a Dask future).
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

__all__ = ["ChunkPolicy", "ChunkSizer", "PoolBackend", "map_window"]


class PoolBackend(Protocol):
    """A pool of worker processes driven from the caller's event loop."""

    @property
    def workers(self) -> int: ...

    async def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...

    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]: ...

    def starmap(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]: ...

    async def aclose(self) -> None: ...

    def terminate(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class ChunkPolicy:
    """How a backend's ``map`` batches calls, given its cost per chunk.

    Plain-function chunks aim at ``target`` seconds of work and at most
    ``max_chunk`` calls; coroutine chunks hold ``coroutine_share`` of a
    worker's concurrency (at least one call).
    """

    target: float
    max_chunk: int
    coroutine_share: float = 0.0

    def sizer(
        self,
        iterable: Iterable[Any],
        chunksize: int | None,
        is_async: bool,
        workers: int,
        concurrency: int,
    ) -> ChunkSizer:
        """A sizer for one ``map`` over ``iterable``; ValueError if ``chunksize < 1``."""
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        start = max(1, int(concurrency * self.coroutine_share)) if is_async else 1
        length = operator.length_hint(iterable, 0)
        return ChunkSizer(chunksize, is_async, length, workers, self.target, self.max_chunk, start)


@dataclass(slots=True)
class ChunkSizer:
    """The size of a map's next chunk: fixed, or grown until a chunk takes ``target`` s.

    Coroutine functions keep the ``start`` size (their calls wait rather
    than compute). Plain functions start at ``start`` and grow, at most
    16-fold per result, to ``target / seconds per call``, capped at
    ``max_chunk`` and, for an input of known length, at a quarter of its
    share per worker (so every worker gets work).
    """

    fixed: int | None
    is_async: bool
    length: int
    workers: int
    target: float
    max_chunk: int
    start: int = 1
    size: int = field(init=False)
    cap: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = self.start if self.fixed is None else self.fixed
        self.cap = self.max_chunk
        if self.fixed is None and self.length:
            self.cap = max(1, min(self.max_chunk, -(-self.length // (4 * self.workers))))

    def observe(self, calls: int, elapsed: float) -> None:
        """A chunk of ``calls`` calls took ``elapsed`` s of work in its worker."""
        if self.fixed is not None or self.is_async or calls == 0 or elapsed <= 0:
            return
        per_call = max(elapsed / calls, 1e-8)
        wanted = int(self.target / per_call)
        self.size = max(1, min(wanted, self.size * 16, self.cap))


def map_window(workers: int, concurrency: int, chunk_size: int, is_async: bool) -> int:
    """How many chunks a map keeps in flight.

    Plain functions: two per worker and two more, so no worker waits for the
    next chunk's round trip. Coroutine functions: enough to fill every
    worker's ``concurrency`` twice over, and at least two per worker.
    """
    if is_async:
        return max(2 * workers, -(-2 * workers * concurrency // chunk_size))
    return 2 * workers + 2
