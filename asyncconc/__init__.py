"""asyncconc: an asyncio-first, event-driven concurrency toolkit.

The classic lessons on processes and threads, rebuilt on one event-loop
core: concurrent downloads, a lock-guarded account, ping/pong through
queues and a process pool with one event loop per core.
"""

import typing as _typing

from asyncconc import _lazy
from asyncconc._errors import (
    AccountError,
    AsyncConcError,
    ClosedError,
    DownloadError,
    FetchError,
    HTTPStatusError,
    InsufficientFundsError,
    IntegrityError,
    InvalidAmountError,
    InvalidURLError,
    PicklingError,
    PoolClosedError,
    PoolError,
    RedirectError,
    TaskTimeoutError,
    UsageError,
    WriteError,
)

# Everything else is imported on first use (PEP 562): a worker process of
# LoopPool imports ``asyncconc.pool`` without paying for aiohttp, a script
# that only needs the account does not load the downloader, and
# ``import asyncconc`` does not import asyncio (``run`` does, when called).
if _typing.TYPE_CHECKING:
    from asyncconc._broken import BrokenPoolError, WorkerCrashedError
    from asyncconc._runner import run
    from asyncconc.account import Account, UnsafeAccount
    from asyncconc.downloader import (
        Downloader,
        DownloaderOptions,
        DownloadEvent,
        DownloadFinished,
        DownloadProgress,
        DownloadRequest,
        DownloadResult,
        DownloadStarted,
        download,
        parse_url_list,
    )
    from asyncconc.pingpong import ping_pong, ping_pong_processes, ping_pong_processes_broken
    from asyncconc.pool import (
        DaskPool,
        LoopPool,
        LoopPoolExecutor,
        PoolBackend,
        partial_sum,
        split_range,
    )

_LAZY = {
    # BrokenProcessPool subclasses: their base imports multiprocessing.
    "BrokenPoolError": "asyncconc._broken",
    "WorkerCrashedError": "asyncconc._broken",
    "Account": "asyncconc.account",
    "UnsafeAccount": "asyncconc.account",
    "DownloadEvent": "asyncconc.downloader",
    "DownloadFinished": "asyncconc.downloader",
    "DownloadProgress": "asyncconc.downloader",
    "DownloadRequest": "asyncconc.downloader",
    "DownloadResult": "asyncconc.downloader",
    "DownloadStarted": "asyncconc.downloader",
    "Downloader": "asyncconc.downloader",
    "DownloaderOptions": "asyncconc.downloader",
    "download": "asyncconc.downloader",
    "parse_url_list": "asyncconc.downloader",
    "ping_pong": "asyncconc.pingpong",
    "ping_pong_processes": "asyncconc.pingpong",
    "ping_pong_processes_broken": "asyncconc.pingpong",
    "DaskPool": "asyncconc.pool",
    "LoopPool": "asyncconc.pool",
    "LoopPoolExecutor": "asyncconc.pool",
    "PoolBackend": "asyncconc.pool",
    "partial_sum": "asyncconc.pool",
    "split_range": "asyncconc.pool",
    "run": "asyncconc._runner",
}


__version__ = "0.1.0"

__all__ = [
    "Account",
    "AccountError",
    "AsyncConcError",
    "BrokenPoolError",
    "ClosedError",
    "DaskPool",
    "DownloadError",
    "DownloadEvent",
    "DownloadFinished",
    "DownloadProgress",
    "DownloadRequest",
    "DownloadResult",
    "DownloadStarted",
    "Downloader",
    "DownloaderOptions",
    "FetchError",
    "HTTPStatusError",
    "InsufficientFundsError",
    "IntegrityError",
    "InvalidAmountError",
    "InvalidURLError",
    "LoopPool",
    "LoopPoolExecutor",
    "PicklingError",
    "PoolBackend",
    "PoolClosedError",
    "PoolError",
    "RedirectError",
    "TaskTimeoutError",
    "UnsafeAccount",
    "UsageError",
    "WorkerCrashedError",
    "WriteError",
    "download",
    "parse_url_list",
    "partial_sum",
    "ping_pong",
    "ping_pong_processes",
    "ping_pong_processes_broken",
    "run",
    "split_range",
]

__getattr__, __dir__ = _lazy.attach(__name__, _LAZY, globals(), __all__)
