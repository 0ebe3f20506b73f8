"""asyncconc: an asyncio-first, event-driven concurrency toolkit.

The classic lessons on processes and threads, rebuilt on one event-loop
core: concurrent downloads, a lock-guarded account, ping/pong through
queues and a process pool with one event loop per core.
"""

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
    WorkerCrashedError,
    WriteError,
)
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
from asyncconc.pool import LoopPool, partial_sum, split_range

__version__ = "0.1.0"

__all__ = [
    "Account",
    "AccountError",
    "AsyncConcError",
    "ClosedError",
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
    "PicklingError",
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
