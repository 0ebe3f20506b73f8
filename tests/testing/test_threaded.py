"""``serve_files_in_thread``: the server for blocking clients and sync tests."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from asyncconc.testing import serve_files_in_thread


def test_a_blocking_client_reaches_it_and_it_stops_on_exit() -> None:
    with serve_files_in_thread(files={"a.txt": b"hello"}) as server:
        server.add_bytes("b.txt", b"added from this thread")
        with urllib.request.urlopen(server.url("a.txt"), timeout=10) as response:
            assert response.read() == b"hello"
        with urllib.request.urlopen(server.url("b.txt"), timeout=10) as response:
            assert response.read() == b"added from this thread"
        url = server.url("a.txt")
    assert not [t for t in threading.enumerate() if t.name == "asyncconc-file-server"]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_a_port_in_use_is_a_clear_error() -> None:
    with (
        serve_files_in_thread() as first,
        pytest.raises(RuntimeError, match="did not start") as caught,
        serve_files_in_thread(port=first.port),
    ):
        pass
    assert isinstance(caught.value.__cause__, OSError)
