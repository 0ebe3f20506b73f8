"""Many files at once over HTTP: see :class:`Downloader` and :func:`download`."""

from asyncconc.downloader._models import (
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadRequest,
    DownloadResult,
    DownloadStarted,
    parse_url_list,
)
from asyncconc.downloader._pipeline import Downloader, DownloaderOptions, download

__all__ = [
    "DownloadEvent",
    "DownloadFinished",
    "DownloadProgress",
    "DownloadRequest",
    "DownloadResult",
    "DownloadStarted",
    "Downloader",
    "DownloaderOptions",
    "download",
    "parse_url_list",
]
