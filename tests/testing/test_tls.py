"""``serve_files_in_thread(tls=True)``: https for blocking clients and sync tests."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest

from asyncconc.testing import serve_files_in_thread


def test_a_sync_client_trusts_the_throwaway_ca() -> None:
    with serve_files_in_thread(files={"a": b"secure"}, tls=True) as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        assert server.ssl_context is not None
        with urllib.request.urlopen(
            server.url("a"), timeout=10, context=server.ssl_context
        ) as response:
            assert response.read() == b"secure"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(
                server.url("a"), timeout=10, context=ssl.create_default_context()
            )
