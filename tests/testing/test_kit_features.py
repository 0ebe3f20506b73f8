"""What test authors need from the kit: TLS, headers, 304, cheap big files."""

from __future__ import annotations

import hashlib
import ssl

import aiohttp
import pytest

from asyncconc.testing import pattern_bytes, serve_files


async def test_tls_server_with_a_throwaway_ca() -> None:
    async with serve_files(files={"a.txt": b"secret"}, tls=True) as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        assert server.ca_pem is not None
        assert server.ssl_context is not None
        assert server.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url("a.txt"), ssl=server.ssl_context) as response:
                assert await response.read() == b"secret"
            # Nobody else trusts that CA.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(server.url("a.txt"), ssl=ssl.create_default_context()):
                    pass


async def test_content_type_and_extra_headers() -> None:
    async with serve_files() as server, aiohttp.ClientSession() as session:
        server.add_bytes("p.json", b"{}", content_type="application/json", headers={"X-A": "1"})
        server.add_generated("g.bin", 10, content_type="text/plain")
        async with session.get(server.url("p.json")) as response:
            assert response.headers["Content-Type"] == "application/json"
            assert response.headers["X-A"] == "1"
        async with session.get(server.url("g.bin")) as response:
            assert response.headers["Content-Type"] == "text/plain"


async def test_conditional_requests_get_304_until_the_file_changes() -> None:
    async with serve_files() as server, aiohttp.ClientSession() as session:
        served = server.add_bytes("c.txt", b"v1")
        url = server.url("c.txt")
        async with session.get(url) as response:
            last_modified = response.headers["Last-Modified"]
            assert response.headers["ETag"] == served.etag
        async with session.get(url, headers={"If-None-Match": served.etag}) as response:
            assert response.status == 304
            assert await response.read() == b""
        async with session.get(url, headers={"If-Modified-Since": last_modified}) as response:
            assert response.status == 304
        async with session.get(url, headers={"If-None-Match": '"other"'}) as response:
            assert (response.status, await response.read()) == (200, b"v1")
        server.add_bytes("c.txt", b"v2")  # a new version: new validators
        async with session.get(url, headers={"If-None-Match": served.etag}) as response:
            assert (response.status, await response.read()) == (200, b"v2")
        async with session.get(
            server.url("c.txt", novalidator=1), headers={"If-None-Match": "*"}
        ) as response:
            assert response.status == 200


async def test_generated_files_are_not_hashed_until_asked() -> None:
    async with serve_files() as server:
        huge = server.add_generated("huge.bin", 1 << 40)  # a TiB: only hashing it would take hours
        assert huge.size == 1 << 40
        assert huge.etag.startswith('"')
        small = server.add_generated("small.bin", 100_000, seed=5)
        assert small.sha256 == hashlib.sha256(pattern_bytes(100_000, 5)).hexdigest()
        assert server.add_bytes("b", b"abc").sha256 == hashlib.sha256(b"abc").hexdigest()
