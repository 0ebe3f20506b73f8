"""Issue 7 item 5: failures in plain words, retried only when it can help.

Every case talks to a real socket on 127.0.0.1 (or a ``.invalid`` name,
which RFC 6761 guarantees never resolves): a closed port, a plain-HTTP
server spoken to with https, a server that accepts and then resets, one
that stalls, one that cuts the body, one with an untrusted certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncconc import DownloadResult, download
from asyncconc.downloader._failures import host_port
from asyncconc.testing import FileServer

FAST: dict[str, Any] = {"backoff": 0.01, "backoff_max": 0.05, "retries": 2}


async def fetch_one(url: str, dest: Path, **options: Any) -> DownloadResult:
    (result,) = await download([url], dest, **{**FAST, **options})
    return result


def assert_plain(error: str | None) -> str:
    """One short line: no exception class names, reprs or aiohttp internals."""
    assert error
    assert "\n" not in error
    for internal in ("Error", "Exception", "ssl:default", "<", "[", "Errno", "_ssl.c"):
        assert internal not in error, error
    return error


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def resetting_server() -> AsyncIterator[int]:
    """Accepts, reads the request, then resets the connection (RST)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def test_host_port_names_the_default_port() -> None:
    assert host_port("https://example.org/x") == "example.org:443"
    assert host_port("http://example.org/x") == "example.org:80"
    assert host_port("http://[::1]:8080/x") == "[::1]:8080"


async def test_a_closed_port_is_connection_refused_and_retried(dest: Path) -> None:
    port = closed_port()
    result = await fetch_one(f"http://127.0.0.1:{port}/a.bin", dest)
    assert result.status == "failed"
    error = assert_plain(result.error)
    assert error == f"connection refused by 127.0.0.1:{port} (gave up after 3 attempts)"
    assert result.attempts == 3


async def test_an_unresolvable_name_fails_at_once_without_retries(dest: Path) -> None:
    started = time.monotonic()
    result = await fetch_one("http://no-such-host.invalid/a.bin", dest, retries=5)
    elapsed = time.monotonic() - started
    assert result.status == "failed"
    assert assert_plain(result.error) == "cannot resolve host no-such-host.invalid"
    assert result.attempts == 1
    assert elapsed < 20, elapsed  # .invalid fails fast (no network needed)


async def test_https_to_a_plain_http_server_is_a_tls_failure_not_retried(
    server: FileServer, dest: Path
) -> None:
    server.add_bytes("a.bin", b"x")
    url = server.url("a.bin").replace("http://", "https://")
    result = await fetch_one(url, dest)
    assert result.status == "failed"
    error = assert_plain(result.error)
    assert error.startswith(f"TLS handshake with 127.0.0.1:{server.port} failed: "), error
    assert "wrong version number" in error
    assert result.attempts == 1
    assert server.hits("a.bin") == 0


async def test_a_connection_reset_is_named_and_retried(dest: Path) -> None:
    async with resetting_server() as port:
        result = await fetch_one(f"http://127.0.0.1:{port}/a.bin", dest)
    assert result.status == "failed"
    error = assert_plain(result.error)
    # A reset before the status line: aiohttp may see it as a reset or as
    # the server hanging up; both are named with the host and port.
    assert error in {
        f"connection reset by 127.0.0.1:{port} (gave up after 3 attempts)",
        f"connection closed by 127.0.0.1:{port} (gave up after 3 attempts)",
    }, error
    assert result.attempts == 3


async def test_a_stall_says_how_long_nothing_came(server: FileServer, dest: Path) -> None:
    server.add_generated("s.bin", 100_000)
    result = await fetch_one(server.url("s.bin", stall=1000), dest, timeout=0.3, retries=0)
    assert assert_plain(result.error) == (
        f"no data from 127.0.0.1:{server.port} for 0.3 s (gave up after 1 attempt)"
    )


async def test_a_cut_body_says_so(server: FileServer, dest: Path) -> None:
    server.add_generated("c.bin", 100_000)
    result = await fetch_one(server.url("c.bin", truncate=1000, norange=1), dest, retries=0)
    assert assert_plain(result.error).startswith(
        f"body ended early: 127.0.0.1:{server.port} closed the connection"
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_an_untrusted_certificate_is_rejected_without_retries(
    tmp_path: Path, dest: Path
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handshakes = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal handshakes
        handshakes += 1
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    async with server:
        port = server.sockets[0].getsockname()[1]
        result = await fetch_one(f"https://127.0.0.1:{port}/a.bin", dest)
    error = assert_plain(result.error)
    assert error.startswith(f"TLS certificate of 127.0.0.1:{port} rejected: "), error
    assert "self-signed" in error or "self signed" in error
    assert result.attempts == 1
    assert handshakes == 0
