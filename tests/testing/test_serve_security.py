"""`serve` under attack: nothing outside DIR, races included; limits; faults off.

Every test talks to a real server on 127.0.0.1 over raw sockets or urllib.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncconc.testing import FileServer, serve_files_in_thread

SECRET = b"SECRET-OUTSIDE-DIR"
INSIDE = b"inside"


def raw(server: FileServer, head: bytes, *, timeout: float = 30) -> bytes:
    """Send ``head`` as is; return everything until the server closes."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def get(server: FileServer, target: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: t", "Connection: close", *headers]
    return raw(server, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


@pytest.fixture(autouse=True)
def no_tracebacks_in_the_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Bad requests are answered, never an "Unhandled exception" in the log."""
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    # aiohttp logs a refused request (huge headers) as "Error handling request";
    # what must never appear is an exception escaping a handler.
    errors = [r.getMessage() for r in records if "Unhandled exception" in r.getMessage()]
    assert errors == []


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "f.txt").write_bytes(SECRET)
    (outside / "sub" / "f.txt").write_bytes(SECRET)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_bytes(INSIDE)
    (root / "k.bin").write_bytes(bytes(range(256)) * 4)
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to(outside)
    (root / "inlink").symlink_to(root / "k.bin")
    (root / "loop").symlink_to(root / "loop")
    return root


@pytest.fixture
def server(tree: Path) -> Iterator[FileServer]:
    with serve_files_in_thread(tree, faults=False, history=0) as running:
        yield running


def _renameat2() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return getattr(libc, "renameat2", None)


def test_swapping_a_folder_for_a_symlink_never_serves_a_byte_from_outside(
    tree: Path, server: FileServer
) -> None:
    renameat2 = _renameat2()
    if renameat2 is None:
        pytest.skip("libc has no renameat2")
    at_fdcwd, rename_exchange = -100, 2
    a, b = os.fsencode(tree / "sub"), os.fsencode(tree / "link")
    stop = threading.Event()
    swaps = [0]

    def swap() -> None:
        while not stop.is_set():
            if renameat2(at_fdcwd, a, at_fdcwd, b, rename_exchange) != 0:
                code = ctypes.get_errno()
                if code in (errno.ENOSYS, errno.EINVAL):
                    return
                raise OSError(code, os.strerror(code))
            swaps[0] += 1

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    bodies: dict[int, int] = {}
    deadline = time.monotonic() + 3
    try:
        for count in range(3000):
            if count > 200 and time.monotonic() > deadline:
                break
            for target in ("/sub/f.txt", "/link/f.txt"):
                response = get(server, target)
                assert SECRET not in response
                bodies[status_of(response)] = bodies.get(status_of(response), 0) + 1
    finally:
        stop.set()
        swapper.join(10)
    if swaps[0] == 0:
        pytest.skip("this file system cannot exchange names (renameat2 RENAME_EXCHANGE)")
    assert set(bodies) <= {200, 404}
    assert bodies.get(200, 0) > 0  # the inside file was served while the swaps ran


@pytest.mark.parametrize(
    "target",
    [
        "/link/f.txt",  # a symlink inside DIR pointing out
        "/inlink",  # symlinks are not followed at all, even to inside DIR
        "/loop",  # a symlink loop: 404, no traceback
        "/../outside/f.txt",
        "/%2e%2e/outside/f.txt",
        "/sub/%2e%2e/%2e%2e/outside/f.txt",
        "/" + "a" * 300,  # longer than NAME_MAX
        "/sub",  # a folder
    ],
)
def test_nothing_outside_dir_or_behind_a_symlink(server: FileServer, target: str) -> None:
    response = get(server, target)
    assert SECRET not in response
    assert status_of(response) in (400, 404)


def test_a_nul_byte_is_a_400(server: FileServer) -> None:
    assert status_of(get(server, "/k.bin%00")) == 400


def test_only_get_and_head(server: FileServer) -> None:
    for method in ("POST", "PUT", "DELETE", "TRACE"):
        response = get(server, "/k.bin", "Content-Length: 0", method=method)
        assert status_of(response) == 405
        assert b"\r\nAllow: GET, HEAD\r\n" in response
    head = get(server, "/k.bin", method="HEAD")
    assert status_of(head) == 200
    assert body_of(head) == b""


@pytest.mark.parametrize(
    ("range_header", "status", "body"),
    [
        ("BYTES=0-5", 206, bytes(range(6))),
        ("bytes=1_0-2_0", 200, None),
        ("bytes=+5-+9", 200, None),
        ("bytes= 5-9", 206, bytes(range(5, 10))),
        ("bytes=-3", 206, bytes([253, 254, 255])),
        ("bytes=2000-", 416, b""),
        ("bytes=5-2", 200, None),
        ("items=0-5", 200, None),
    ],
)
def test_range_by_the_book(
    server: FileServer, range_header: str, status: int, body: bytes | None
) -> None:
    response = get(server, "/k.bin", f"Range: {range_header}")
    assert status_of(response) == status
    whole = bytes(range(256)) * 4
    if status == 200:
        assert body_of(response) == whole
    elif status == 206:
        assert body_of(response) == body
    else:
        assert b"Content-Range: bytes */1024" in response


def test_an_empty_file_has_no_satisfiable_range(server: FileServer) -> None:
    response = get(server, "/empty", "Range: bytes=-5")
    assert status_of(response) == 416
    assert b"Content-Range: bytes */0" in response


def test_if_range_with_a_stale_validator_sends_the_whole_file(server: FileServer) -> None:
    first = get(server, "/k.bin")
    etag = next(
        line.split(b": ", 1)[1] for line in first.split(b"\r\n") if line.startswith(b"Etag")
    )
    fresh = get(server, "/k.bin", "Range: bytes=0-9", f"If-Range: {etag.decode()}")
    assert (status_of(fresh), body_of(fresh)) == (206, bytes(range(10)))
    stale = get(server, "/k.bin", "Range: bytes=0-9", 'If-Range: "stale-etag"')
    assert (status_of(stale), len(body_of(stale))) == (200, 1024)


def test_conditional_requests_get_304(server: FileServer) -> None:
    first = get(server, "/k.bin")
    headers = dict(
        line.decode().split(": ", 1) for line in first.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    )
    assert status_of(get(server, "/k.bin", f"If-None-Match: {headers['Etag']}")) == 304
    assert status_of(get(server, "/k.bin", f"If-Modified-Since: {headers['Last-Modified']}")) == 304


def test_a_relative_dir_is_resolved_once_at_start(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree.parent)
    with serve_files_in_thread("root", faults=False) as running:
        monkeypatch.chdir(tree / "sub")
        assert body_of(get(running, "/sub/f.txt")) == INSIDE


def test_without_faults_the_query_string_is_ignored(tree: Path, server: FileServer) -> None:
    for query in ("location=http://evil.example/", "delay=1e308", "stall=1", "status=99"):
        response = get(server, f"/k.bin?{query}")
        assert status_of(response) == 200
        assert len(body_of(response)) == 1024
    with serve_files_in_thread(tree) as faulty:
        assert status_of(get(faulty, "/k.bin?status=503")) == 503
        assert status_of(get(faulty, "/k.bin?status=99")) == 400


def test_silent_clients_are_cut_by_the_idle_timeout_while_others_are_served(tree: Path) -> None:
    # Slowloris clients (headers begun, never finished): test_serve_timeouts.py.
    with serve_files_in_thread(tree, faults=False, idle_timeout=1.0) as running:
        started = time.monotonic()
        with socket.create_connection((running.host, running.port), timeout=30) as silent:
            assert status_of(get(running, "/k.bin")) == 200
            with contextlib.suppress(ConnectionResetError):
                assert silent.recv(1) == b""  # closed by the server
            assert status_of(get(running, "/k.bin")) == 200
        assert time.monotonic() - started < 15


def test_huge_headers_are_refused(server: FileServer) -> None:
    response = get(server, "/k.bin", "X-Big: " + "a" * 20_000)
    assert status_of(response) in (400, 431)
    many = [f"X-{i}: v" for i in range(200)]
    assert status_of(get(server, "/k.bin", *many)) in (400, 431)


def test_listing_is_off_by_default_and_escapes_names(tree: Path, server: FileServer) -> None:
    (tree / "<script>x.txt").write_bytes(b"x")
    assert status_of(get(server, "/")) == 404
    with serve_files_in_thread(tree, faults=False, listing=True) as listed:
        page = body_of(get(listed, "/"))
        sub = body_of(get(listed, "/sub/"))
        assert status_of(get(listed, "/link/")) == 404  # a symlinked folder is not walked
    assert b"<script>" not in page
    assert b"&lt;script&gt;x.txt" in page
    assert b'href="sub/"' in page
    assert b"link" not in page  # symlinks are left out
    assert b'href="f.txt"' in sub


@pytest.mark.parametrize("faults", [False, True])
def test_a_file_that_shrinks_while_sent_ends_the_connection(tree: Path, faults: bool) -> None:
    big = tree / "shrinks.bin"
    size = 64 << 20
    with big.open("wb") as fh:
        fh.truncate(size)
    with serve_files_in_thread(tree, faults=faults) as running:
        # drip: the faults path, streamed piece by piece (no sendfile).
        query = "?drip=0.001&drip_size=65536" if faults else ""
        with socket.create_connection((running.host, running.port), timeout=30) as sock:
            sock.sendall(f"GET /shrinks.bin{query} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            data = sock.recv(65536)
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            os.truncate(big, 1 << 20)
            total = len(data.partition(b"\r\n\r\n")[2])
            while chunk := sock.recv(1 << 20):  # a kept-alive connection would hang here
                total += len(chunk)
    assert b"Content-Length: 67108864" in data
    assert total < size
