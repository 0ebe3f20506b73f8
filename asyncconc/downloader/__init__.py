"""Many files at once over HTTP: see :class:`Downloader` and :func:`download`.

Names are imported on first use (PEP 562), so the command line can parse
its arguments, and read a URL list, before aiohttp is loaded.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from asyncconc.downloader._download import download
    from asyncconc.downloader._models import (
        DownloadEvent,
        DownloadFinished,
        DownloadProgress,
        DownloadRequest,
        DownloadResult,
        DownloadStarted,
        parse_url_list,
    )
    from asyncconc.downloader._pipeline import Downloader, DownloaderOptions

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

_MODULES = {"Downloader": "_pipeline", "DownloaderOptions": "_pipeline", "download": "_download"}


def __getattr__(name: str) -> _typing.Any:
    if name not in __all__:
        raise AttributeError(f"module 'asyncconc.downloader' has no attribute {name!r}")
    module = _MODULES.get(name, "_models")
    value = getattr(_importlib.import_module(f"asyncconc.downloader.{module}"), name)
    globals()[name] = value
    return value
