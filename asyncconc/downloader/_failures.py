"""Why a download failed, in plain words, and whether trying again can help.

:func:`classify` turns what aiohttp, asyncconc's own receive path
(:mod:`._http1`), the OS and the TLS library raise into
one short line that names the host and port and says what happened — never
an exception class name or repr — plus the decision to retry.

The classes, and why each is or is not retried (curl's ``--retry`` makes
much the same choices):

=========================================  =====  ==================================
message                                     retry  why
=========================================  =====  ==================================
``cannot resolve host H``                   no     a name that does not resolve now
                                                   will not in a second either
``TLS handshake with H:P failed: …``        no     a protocol mismatch (e.g. https
                                                   to a plain-HTTP port) is stable
``TLS certificate of H:P rejected: …``      no     an untrusted certificate stays so
``connection refused by H:P``               yes    a server that is (re)starting
``cannot connect to H:P: …``                yes    unreachable networks come back
``no connection to H:P within S s``         yes    a busy or lossy path
``no data from H:P for S s``                yes    a stalled transfer; resumed
``connection reset by H:P``                 yes    resumed with Range
``connection closed by H:P``                yes    the server dropped the connection
``body ended early: H:P closed the         yes    resumed with Range
connection``
``H:P sent an invalid HTTP response``       no     not an HTTP server, or a broken one
``too many open files``                     wait   back-pressure, never a failure
                                                   (see the pipeline)
=========================================  =====  ==================================
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from asyncconc.downloader._http1 import (
    BodyCut,
    ConnectFailure,
    ConnectTimeout,
    InvalidAnswer,
    ServerClosed,
)

__all__ = ["Failure", "classify", "host_port", "is_emfile", "is_enospc"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_FILES = frozenset({errno.EMFILE, errno.ENFILE})
_NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure: its line of text, and what to do about it."""

    message: str
    retry: bool
    backpressure: bool = False


def host_port(url: str) -> str:
    """``host:port`` of ``url``, with the scheme's default port spelled out."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return f"{host}:{port}"


def _errno_chain(exc: BaseException | None) -> set[int]:
    """Every ``errno`` on ``exc``, its ``os_error`` and its causes."""
    found: set[int] = set()
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and isinstance(exc.errno, int):
            found.add(exc.errno)
        os_error = getattr(exc, "os_error", None)
        if isinstance(os_error, OSError) and isinstance(os_error.errno, int):
            found.add(os_error.errno)
        exc = exc.__cause__ or exc.__context__
    return found


def is_emfile(exc: BaseException) -> bool:
    """The process (or system) ran out of file descriptors."""
    return not _NO_FILES.isdisjoint(_errno_chain(exc))


def is_enospc(exc: BaseException) -> bool:
    """The disk (or the user's quota) is full."""
    return not _NO_SPACE.isdisjoint(_errno_chain(exc))


def _strerror(code: int | None, fallback: str) -> str:
    text = os.strerror(code) if code else fallback
    return text[:1].lower() + text[1:]


def _tls_reason(exc: Any) -> str:
    inner = exc.os_error
    if isinstance(inner, ssl.SSLCertVerificationError):
        return inner.verify_message or "certificate verify failed"
    reason = getattr(inner, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.replace("_", " ").lower()
    return _strerror(None, str(inner.strerror or "the handshake did not complete"))


def classify(
    exc: BaseException, url: str, *, connect_timeout: float | None, read_timeout: float | None
) -> Failure:
    """The :class:`Failure` for ``exc``, raised while fetching ``url``."""
    where = host_port(url)
    if is_emfile(exc):
        return Failure("too many open files", retry=True, backpressure=True)
    # aiohttp is imported only when something needed it (see _http1): when
    # it is not, ``exc`` cannot be one of its errors.
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and (failure := _aiohttp_tls(aiohttp, exc, url, where)):
        return failure
    if isinstance(exc, socket.gaierror):
        return Failure(f"cannot resolve host {urlsplit(url).hostname}", retry=False)
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").replace("_", " ").lower() or "TLS error"
        return Failure(f"TLS error with {where}: {reason}", retry=True)
    if isinstance(exc, ConnectTimeout) or (
        aiohttp is not None and isinstance(exc, aiohttp.ConnectionTimeoutError)
    ):
        return Failure(f"no connection to {where} within {connect_timeout:g} s", retry=True)
    if isinstance(exc, TimeoutError):
        return Failure(f"no data from {where} for {read_timeout:g} s", retry=True)
    codes = _errno_chain(exc)
    if errno.ECONNREFUSED in codes:
        return Failure(f"connection refused by {where}", retry=True)
    if errno.ECONNRESET in codes or isinstance(exc, ConnectionResetError):
        return Failure(f"connection reset by {where}", retry=True)
    if isinstance(exc, ConnectFailure) or (
        aiohttp is not None and isinstance(exc, aiohttp.ClientConnectorError)
    ):
        reason = _strerror(exc.os_error.errno, exc.strerror or "unknown error")
        return Failure(f"cannot connect to {where}: {reason}", retry=True)
    if aiohttp is not None and (failure := _aiohttp_other(aiohttp, exc, url, where)):
        return failure
    if isinstance(exc, ServerClosed):
        return Failure(f"connection closed by {where}", retry=True)
    if isinstance(exc, BodyCut):
        return Failure(f"body ended early: {where} closed the connection", retry=True)
    if isinstance(exc, InvalidAnswer):
        return Failure(f"{where} sent an invalid HTTP response", retry=False)
    if isinstance(exc, OSError):
        code = exc.errno if isinstance(exc.errno, int) else None
        return Failure(f"network error with {where}: {_strerror(code, 'unknown')}", retry=True)
    return Failure(f"request to {where} failed", retry=False)


def _aiohttp_tls(aiohttp: Any, exc: BaseException, url: str, where: str) -> Failure | None:
    """aiohttp's name-resolution and TLS errors (checked before any other)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Failure(f"cannot resolve host {urlsplit(url).hostname}", retry=False)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        reason = getattr(cert, "verify_message", None) or _strerror(None, str(cert))
        return Failure(f"TLS certificate of {where} rejected: {reason}", retry=False)
    if isinstance(exc, aiohttp.ClientSSLError):
        return Failure(f"TLS handshake with {where} failed: {_tls_reason(exc)}", retry=False)
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return Failure(f"TLS certificate of {where} does not match the fingerprint", retry=False)
    return None


def _aiohttp_other(aiohttp: Any, exc: BaseException, url: str, where: str) -> Failure | None:
    """aiohttp's errors after the connection was made."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Failure(f"connection closed by {where}", retry=True)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Failure(f"body ended early: {where} closed the connection", retry=True)
    if isinstance(exc, aiohttp.ClientResponseError):
        return Failure(f"{where} sent an invalid HTTP response", retry=False)
    if isinstance(exc, aiohttp.InvalidURL):
        return Failure(f"invalid URL {url!r}", retry=False)
    if isinstance(exc, OSError):
        return None  # worded below, as any OSError
    if isinstance(exc, aiohttp.ClientConnectionError):
        return Failure(f"connection to {where} failed", retry=True)
    return None
