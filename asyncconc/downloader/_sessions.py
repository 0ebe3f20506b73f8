"""How a downloader reaches servers: its own connections, or aiohttp.

:class:`Sessions` is shared by everything of one :class:`~._pipeline.Downloader`
(and by a ``--workers`` process's segment helper): plain ``http://`` goes over
:mod:`._http1`, anything else through an aiohttp session made on first use, or
through the caller's own session for everything. :func:`is_network_error` and
:func:`is_body_error` tell the network's failures from bugs for both paths,
without importing aiohttp when nothing did.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

from multidict import CIMultiDictProxy

from asyncconc.downloader._http1 import USER_AGENT, Connections, WireError, usable

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Sessions", "is_body_error", "is_network_error"]


class Sessions:
    """How a downloader reaches servers: its own connections, or aiohttp.

    With no ``session`` of the caller's, plain ``http://`` requests go over
    :attr:`wire` (:mod:`._http1`), and the aiohttp session for the rest
    (``https``, ``--split`` segments, cookies) is made on first use, so a
    run of plain ``http://`` URLs never imports aiohttp (0.3 s of start-up
    here). A caller's ``session`` carries every request and is never closed
    here.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        *,
        timeout: float,
        limit: int,
        per_host: int | None,
    ) -> None:
        self._session = session
        self._owned = session is None
        self.seconds = timeout  # connect and idle-read timeout
        self._limit = limit
        self._per_host = per_host
        self._timeout: aiohttp.ClientTimeout | None = None
        self.wire = Connections() if self._owned else None

    @property
    def timeout(self) -> aiohttp.ClientTimeout:
        """Connect and idle-read timeouts only (a slow but moving transfer
        may take as long as it takes)."""
        if self._timeout is None:
            import aiohttp

            t = self.seconds
            self._timeout = aiohttp.ClientTimeout(
                total=None, connect=t, sock_connect=t, sock_read=t
            )
        return self._timeout

    def get(self) -> aiohttp.ClientSession:
        """The aiohttp session, made now if it is the downloader's own."""
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._per_host or 0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                timeout=self.timeout,
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    def wire_for(self, url: str) -> Connections | None:
        """The connections for ``url`` when it may go around aiohttp."""
        wire = self.wire
        if wire is None or not usable(url):
            return None
        session = self._session
        # With cookies in the jar, aiohttp sends them: it takes the request.
        if session is not None and len(session.cookie_jar):
            return None
        return wire

    def keep_cookies(self, headers: CIMultiDictProxy[str], url: str) -> None:
        """What a ``Set-Cookie`` of an answer on :attr:`wire` asks to keep."""
        from http.cookies import CookieError, SimpleCookie

        from yarl import URL

        cookies: SimpleCookie = SimpleCookie()
        for value in headers.getall("Set-Cookie", ()):
            with contextlib.suppress(CookieError):
                cookies.load(value)
        self.get().cookie_jar.update_cookies(cookies, URL(url))

    async def aclose(self) -> None:
        """Close what is the downloader's own (idempotent)."""
        if self.wire is not None:
            await self.wire.aclose()
        session, self._session = self._session, None
        if session is not None and self._owned:
            await session.close()


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` from sending a request is the network's (or server's) doing."""
    if isinstance(exc, WireError | OSError | TimeoutError):
        return True
    aiohttp = sys.modules.get("aiohttp")  # not imported: not one of its errors
    return aiohttp is not None and isinstance(exc, aiohttp.ClientError)


def is_body_error(exc: BaseException) -> bool:
    """Whether ``exc`` from reading a body is the network's (or server's) doing."""
    if isinstance(exc, WireError | TimeoutError):
        return True
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(
        exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError
    )
