"""``serve --workers N``: N server processes on one port, supervised.

Nginx's model: the master does no HTTP at all. It reserves the port (a
socket bound with ``SO_REUSEPORT`` and never listening, so the kernel hands
connections only to the workers), starts N workers — each an ordinary
``serve`` process with its own event loop, bound to the same port with
``SO_REUSEPORT`` — and then only waits. A worker that dies is replaced; the
kernel spreads new connections over the listening sockets. Ctrl-C or SIGTERM
stops every worker; each worker also gets ``PR_SET_PDEATHSIG`` so that the
kernel kills it if the master is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket
import sys
from collections.abc import Sequence

from asyncconc._errors import UsageError

__all__ = ["reserve_port", "supervise"]

_PR_SET_PDEATHSIG = 1
_STOP_GRACE = 5.0  # seconds a worker gets to stop before SIGKILL
_RESPAWN_PAUSE = 0.5  # between replacements, so a crashing worker is not a fork storm


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening ``SO_REUSEPORT`` socket holding ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
    except OSError as exc:
        holder.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return holder


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def _start(argv: Sequence[str]) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncconc",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    assert child.stdout is not None
    line = await child.stdout.readline()  # "serving ... at URL": it is listening
    if not line:
        code = await child.wait()
        raise UsageError(f"a server worker exited at start (exit status {code})")
    return child


async def supervise(argv: Sequence[str], workers: int, announce: str) -> None:
    """Run ``workers`` copies of ``python -m asyncconc *argv`` until cancelled."""
    running: dict[asyncio.Task[int], asyncio.subprocess.Process] = {}
    try:
        for _ in range(workers):
            child = await _start(argv)
            running[asyncio.create_task(child.wait())] = child
        print(announce, flush=True)
        while True:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for ended in done:
                child = running.pop(ended)
                print(
                    f"server worker {child.pid} exited (status {ended.result()}); replacing it",
                    flush=True,
                )
            await asyncio.sleep(_RESPAWN_PAUSE)
            while len(running) < workers:
                child = await _start(argv)
                running[asyncio.create_task(child.wait())] = child
    finally:
        # Sync first: every worker is told to stop, whatever happens next.
        for child in running.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(_STOP_GRACE):
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            for child in running.values():
                if child.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
            for task in running:
                task.cancel()
