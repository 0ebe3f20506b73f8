"""The exception tree of asyncconc.

Every error asyncconc raises on purpose derives from :class:`AsyncConcError`::

    AsyncConcError
    ├── UsageError                  bad command-line input (exit code 2)
    ├── ClosedError                 you closed it (or never opened it): not a failure
    ├── DownloadError (.url)        one URL could not be downloaded
    │   ├── InvalidURLError         not an http(s) URL, or an unusable line
    │   ├── FetchError              the HTTP side failed
    │   │   ├── HTTPStatusError     the server answered an error status (.status)
    │   │   └── RedirectError       too many redirects, a loop, or a bad Location
    │   ├── IntegrityError          length or sha256 does not match
    │   └── WriteError              the file system refused
    ├── AccountError
    │   ├── InvalidAmountError      float, negative or zero amount (also a ValueError)
    │   └── InsufficientFundsError  a withdrawal or transfer larger than the balance
    └── PoolError
        ├── PoolClosedError         the pool is closed (also a ClosedError and a RuntimeError)
        ├── BrokenPoolError         the pool cannot run tasks any more (also BrokenProcessPool)
        ├── WorkerCrashedError      a worker process died while holding the task
        │                           (also BrokenProcessPool; the pool itself goes on)
        ├── TaskTimeoutError        a task exceeded its own timeout
        └── PicklingError           an argument or result could not cross processes

Errors from aiohttp, the OS and Dask are translated at one boundary each with
``raise ... from exc``, so callers never need to import them. "You closed it"
(:class:`ClosedError`) is kept apart from "it broke"
(:class:`WorkerCrashedError`). :class:`asyncio.CancelledError` is never
subclassed, wrapped or swallowed.

:class:`BrokenPoolError` and :class:`WorkerCrashedError` derive from
``BrokenProcessPool``, whose module imports :mod:`multiprocessing` (a third
of the start-up of ``asyncconc download``); they live in
:mod:`asyncconc._broken` and are loaded from here on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "AccountError",
    "AsyncConcError",
    "BrokenPoolError",
    "ClosedError",
    "DownloadError",
    "FetchError",
    "HTTPStatusError",
    "InsufficientFundsError",
    "IntegrityError",
    "InvalidAmountError",
    "InvalidURLError",
    "PicklingError",
    "PoolClosedError",
    "PoolError",
    "RedirectError",
    "TaskTimeoutError",
    "UsageError",
    "WorkerCrashedError",
    "WriteError",
]


class AsyncConcError(Exception):
    """Root of every error asyncconc raises on purpose."""


class UsageError(AsyncConcError):
    """Bad command-line input; the CLI prints it on one line and exits 2."""


class ClosedError(AsyncConcError):
    """The object was closed (or never opened) by its owner; nothing broke."""


class DownloadError(AsyncConcError):
    """One URL could not be downloaded. ``url`` names it."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url

    def __reduce__(self) -> tuple[object, ...]:
        # Keep keyword-only ``url`` across pickling (download workers run in
        # other processes).
        return (_rebuild_download_error, (type(self), str(self), self.url))


def _rebuild_download_error(cls: type[DownloadError], message: str, url: str) -> DownloadError:
    return cls(message, url=url)


class InvalidURLError(DownloadError):
    """The URL is not http(s), has no host, or the line cannot be used."""


class FetchError(DownloadError):
    """The HTTP exchange failed: connection, timeout, early end of body."""


class HTTPStatusError(FetchError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, url: str, status: int) -> None:
        super().__init__(message, url=url)
        self.status = status

    def __reduce__(self) -> tuple[object, ...]:
        return (HTTPStatusError._rebuild, (str(self), self.url, self.status))

    @staticmethod
    def _rebuild(message: str, url: str, status: int) -> HTTPStatusError:
        return HTTPStatusError(message, url=url, status=status)


class RedirectError(FetchError):
    """Too many redirects, a redirect loop, or a Location we will not follow."""


class IntegrityError(DownloadError):
    """The data does not match its Content-Length or the requested sha256."""


class WriteError(DownloadError):
    """The file system refused to store the data."""


class AccountError(AsyncConcError):
    """Base of the account errors."""


class InvalidAmountError(AccountError, ValueError):
    """An amount that is not a positive exact number (floats are refused)."""


class InsufficientFundsError(AccountError):
    """A withdrawal or transfer larger than the balance; nothing changed."""


class PoolError(AsyncConcError):
    """Base of the process-pool errors."""


class PoolClosedError(PoolError, ClosedError, RuntimeError):
    """The pool is closed (or not yet started): you closed it, it did not break.

    Also a :class:`RuntimeError`, which is what ``concurrent.futures``
    executors raise for a submit after shutdown.
    """


class TaskTimeoutError(PoolError, TimeoutError):
    """A task ran longer than its own timeout and was abandoned."""


class PicklingError(PoolError):
    """An argument or a result could not be pickled to cross processes."""


if TYPE_CHECKING:
    from asyncconc._broken import BrokenPoolError, WorkerCrashedError
else:
    from asyncconc import _lazy

    __getattr__, _ = _lazy.attach(
        __name__,
        {"BrokenPoolError": "asyncconc._broken", "WorkerCrashedError": "asyncconc._broken"},
        globals(),
        __all__,
    )
