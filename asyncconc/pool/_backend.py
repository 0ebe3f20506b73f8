"""The calls every pool backend offers: :class:`LoopPool` and :class:`DaskPool`.

Code written against :class:`PoolBackend` runs on one machine or on a Dask
cluster unchanged; ``tests/pool/test_dask.py`` has mypy check that both
classes satisfy it and runs the same calls through both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Protocol, Self

__all__ = ["PoolBackend"]


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
