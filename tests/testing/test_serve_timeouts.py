"""``serve``'s header deadline and send timeout, attacked over raw sockets; plain GETs.

Each test runs against the real command (``python -m asyncconc serve``, on
uvloop, where files are copied through Python) and against the test kit's
server in a thread (asyncio's loop, where files go out with ``sendfile``).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from asyncconc.testing import serve_files_in_thread

BIG = 10 * 1000 * 1000


@dataclass(frozen=True)
class Running:
    host: str
    port: int
    pid: int  # the process whose descriptors the server uses


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "k.bin").write_bytes(os.urandom(1024))
    with (tmp_path / "big.bin").open("wb") as fh:
        fh.write(os.urandom(BIG))
    return tmp_path


@pytest.fixture(params=["command", "thread"])
def running(request: pytest.FixtureRequest, tree: Path) -> Iterator[Running]:
    """A server with a 60 s idle timeout, 1 s header deadline, 1 s send timeout."""
    if request.param == "thread":
        with serve_files_in_thread(
            tree, faults=False, idle_timeout=60.0, header_timeout=1.0, send_timeout=1.0
        ) as server:
            yield Running(server.host, server.port, os.getpid())
        return
    argv = [sys.executable, "-m", "asyncconc", "serve", str(tree), "--idle-timeout", "60"]
    argv += ["--header-timeout", "1", "--send-timeout", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once it listens
        port = int(line.split(" at http://127.0.0.1:")[1].split("/")[0])
        yield Running("127.0.0.1", port, proc.pid)
    finally:
        proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def get(running: Running, path: str) -> tuple[bytes, float]:
    """One keep-alive-less GET over a raw socket: (the status line, seconds taken)."""
    started = time.monotonic()
    with socket.create_connection((running.host, running.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.split(b"\r\n", 1)[0], time.monotonic() - started


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(condition: object, seconds: float) -> bool:
    """Poll ``condition()`` (the kernel's state: nothing to wait on) until true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_slowloris_is_cut_by_the_header_deadline_while_others_are_served(
    running: Running,
) -> None:
    slow = socket.create_connection((running.host, running.port), timeout=30)
    answer: list[bytes] = []
    cut = threading.Event()

    def dribble() -> None:
        # One header byte per 100 ms for at most 30 s, never finishing the headers.
        slow.sendall(b"GET /k.bin HTTP/1.1\r\nX-Dribble: ")
        for _ in range(300):
            try:
                slow.sendall(b"a")
                readable, _, _ = select.select([slow], [], [], 0.1)
                if readable:
                    while chunk := slow.recv(65536):
                        answer.append(chunk)
                    break
            except OSError:
                break
        else:
            return
        cut.set()

    started = time.monotonic()
    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    try:
        served = 0
        while not cut.is_set() and time.monotonic() - started < 30:
            status, took = get(running, "/k.bin")
            assert status == b"HTTP/1.1 200 OK"
            assert took < 5  # promptly, throughout
            served += 1
        assert cut.wait(1), "the slowloris client was never cut"
        # The idle timeout is 60 s: only the 1 s header deadline explains this.
        assert time.monotonic() - started < 15
        assert b"".join(answer).startswith(b"HTTP/1.1 408")
        assert served > 0
    finally:
        dribbler.join(35)
        slow.close()


def test_an_idle_keep_alive_connection_outlives_the_header_deadline(running: Running) -> None:
    with socket.create_connection((running.host, running.port), timeout=30) as sock:
        for _ in range(2):
            sock.sendall(b"GET /k.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while len(data) < 1024 or b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 OK")
            # Silent for three header deadlines: still open (the idle timeout is 60 s).
            readable, _, _ = select.select([sock], [], [], 3)
            assert readable == []


def test_a_body_dribbled_in_is_cut_by_the_same_deadline(running: Running) -> None:
    with socket.create_connection((running.host, running.port), timeout=30) as sock:
        sock.sendall(b"POST /k.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        data = b""
        for _ in range(300):
            sock.sendall(b"a")
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                try:
                    while chunk := sock.recv(65536):
                        data += chunk
                except ConnectionResetError:
                    pass
                break
        assert time.monotonic() - started < 15
    assert data.startswith((b"HTTP/1.1 408", b"HTTP/1.1 405"))


def test_a_client_that_stops_reading_is_dropped_and_its_descriptors_freed(
    running: Running,
) -> None:
    before = open_descriptors(running.pid)
    sock = socket.socket()
    try:
        # A tiny receive window, and never a read: the server's sends stall.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((running.host, running.port))
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        mine = 1 if running.pid == os.getpid() else 0  # this socket, in the same process
        # The server holds the connection and the file (2 descriptors) ...
        assert wait_until(lambda: open_descriptors(running.pid) >= before + mine + 2, 20)
        # ... until the 1 s send timeout drops both (no timeout: held forever).
        assert wait_until(lambda: open_descriptors(running.pid) <= before + mine, 20)
        received = 0
        sock.settimeout(30)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < BIG
    finally:
        sock.close()


def request(running: Running, path: str, *headers: str) -> bytes:
    """One GET over a raw socket, the whole answer (head and body)."""
    head = "".join(f"{h}\r\n" for h in headers)
    with socket.create_connection((running.host, running.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{head}\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    return data


def test_a_plain_get_sends_the_file_byte_exact_with_its_validators(
    running: Running, tree: Path
) -> None:
    # Plain GETs skip FileResponse: uvloop copies, asyncio's loop uses sendfile.
    head, _, body = request(running, "/big.bin").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == (tree / "big.bin").read_bytes()
    lines = {k.lower(): v for k, _, v in (x.partition(b": ") for x in head.split(b"\r\n")[1:])}
    assert lines[b"content-length"] == str(BIG).encode()
    assert lines[b"accept-ranges"] == b"bytes"
    etag, last_modified = lines[b"etag"], lines[b"last-modified"]
    # The validators are FileResponse's: its answers to conditional requests agree.
    assert request(running, "/big.bin", f"If-None-Match: {etag.decode()}").startswith(
        b"HTTP/1.1 304"
    )
    assert request(running, "/big.bin", 'If-Match: "stale"').startswith(b"HTTP/1.1 412")
    old = "If-Unmodified-Since: Mon, 01 Jan 1990 00:00:00 GMT"
    assert request(running, "/big.bin", old).startswith(b"HTTP/1.1 412")
    future = "If-Unmodified-Since: Fri, 01 Jan 2100 00:00:00 GMT"
    assert request(running, "/k.bin", future).startswith(b"HTTP/1.1 200")
    since = f"If-Modified-Since: {last_modified.decode()}"
    assert request(running, "/big.bin", since).startswith(b"HTTP/1.1 304")
