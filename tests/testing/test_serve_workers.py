"""``serve --workers N``: N processes on one port, supervised, gone with the master."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest


@pytest.fixture
def master(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with start_master(tmp_path, "shared") as started:
        yield started


@contextlib.contextmanager
def start_master(tmp_path: Path, queues: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    (tmp_path / "a.txt").write_bytes(b"hello")
    argv = [sys.executable, "-m", "asyncconc", "serve", str(tmp_path), "--workers", "2"]
    proc = subprocess.Popen([*argv, "--accept-queues", queues], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "with 2 worker processes" in line
        yield proc, line.split(" at ")[1].split()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def workers_of(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children()


def get(base: str) -> bytes:
    with urllib.request.urlopen(base + "a.txt", timeout=30) as response:
        return bytes(response.read())


def test_a_killed_worker_is_replaced_and_ctrl_c_stops_all(
    master: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base = master
    assert proc.stdout is not None
    first = workers_of(proc)
    assert len(first) == 2
    assert all(get(base) == b"hello" for _ in range(20))
    os.kill(first[0].pid, signal.SIGKILL)
    assert f"server worker {first[0].pid} exited" in proc.stdout.readline()
    assert get(base) == b"hello"
    children = workers_of(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_workers_die_with_a_sigkilled_master(master: tuple[subprocess.Popen[str], str]) -> None:
    proc, base = master
    children = workers_of(proc)
    assert get(base) == b"hello"
    proc.kill()
    proc.wait(30)
    _, alive = psutil.wait_procs(children, timeout=5)  # PR_SET_PDEATHSIG: the kernel's job
    assert alive == []


def answered(sock: socket.socket) -> bool:
    """Send a request on a connected socket: did a 200 come back?"""
    try:
        sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:  # reset: the connection died with the worker that held it
        return False
    return data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello")


@pytest.mark.parametrize("queues", ["shared", "per-worker"])
def test_a_sigkilled_worker_under_load_loses_no_queued_connection(
    tmp_path: Path, queues: str
) -> None:
    """One shared accept queue: what waits in it survives a killed worker.

    With a socket per worker (SO_REUSEPORT, ``--accept-queues per-worker``,
    kept to show the difference) the connections queued at the killed
    worker are reset with it.
    """
    with start_master(tmp_path, queues) as (proc, base):
        assert proc.stdout is not None
        port = int(base.rsplit(":", 1)[1].strip("/"))
        victim = workers_of(proc)[0]
        stop = threading.Event()
        results: list[bool] = []

        def load() -> None:
            while not stop.is_set():
                with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                    results.append(answered(sock))

        loaders = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for each in loaders:
            each.start()
        try:
            # The victim stops accepting; 40 connections are made meanwhile
            # (the kernel completes them into an accept queue), then it dies.
            os.kill(victim.pid, signal.SIGSTOP)
            queued = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(40)]
            os.kill(victim.pid, signal.SIGKILL)
            assert f"server worker {victim.pid} exited" in proc.stdout.readline()
            lost = sum(not answered(sock) for sock in queued)
            for sock in queued:
                sock.close()
        finally:
            stop.set()
            for each in loaders:
                each.join(60)
        assert results.count(True) > 0  # the load went on
        if queues == "shared":
            assert lost == 0
            # At most the load's in-flight requests at the victim were lost.
            assert results.count(False) <= len(loaders)
        else:
            assert lost > 0  # about half: those the kernel had put in the victim's queue


def test_a_replacement_killed_while_it_starts_is_started_again(
    master: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base = master
    assert proc.stdout is not None
    first = workers_of(proc)
    os.kill(first[0].pid, signal.SIGKILL)
    assert f"server worker {first[0].pid} exited" in proc.stdout.readline()
    # The replacement is SIGKILLed as soon as it exists (before it listens,
    # most times): the master tries again instead of giving up.
    deadline = time.monotonic() + 30
    while not (new := [p for p in workers_of(proc) if p.pid not in {w.pid for w in first}]):
        assert time.monotonic() < deadline, "no replacement started"
        time.sleep(0.01)
    os.kill(new[0].pid, signal.SIGKILL)
    line = proc.stdout.readline()
    assert "exited at start" in line or f"server worker {new[0].pid} exited" in line
    deadline = time.monotonic() + 30
    while len(workers_of(proc)) < 2 or proc.poll() is not None:
        assert proc.poll() is None, "the master gave up"
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.05)
    assert all(get(base) == b"hello" for _ in range(10))
