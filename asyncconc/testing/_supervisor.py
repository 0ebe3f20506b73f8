"""``serve --workers N``: N server processes on one port, supervised.

Nginx's model: the master does no HTTP at all. It opens ONE listening socket
and starts N workers that inherit it — each an ordinary ``serve`` process
with its own event loop, accepting from that socket — and then only waits.
A worker that dies is replaced; Ctrl-C or SIGTERM stops every worker; each
worker also gets ``PR_SET_PDEATHSIG`` so that the kernel kills it if the
master is killed outright.

Why one shared socket rather than ``SO_REUSEPORT`` (a listening socket per
worker, the kernel spreading connections over them by hash): with
``SO_REUSEPORT`` each worker has its own accept queue, and the connections
waiting in the queue of a worker that is killed are reset with it. With one
queue, a killed worker loses only the connections it had accepted; those
still queued are accepted by the others. Measured under ``ab`` load while
SIGKILLing workers (docs/benchmarks-serve.md): the shared queue lost fewer
requests. ``reserve_port`` (the ``SO_REUSEPORT`` model) is kept for that
comparison (``--accept-queues per-worker``, hidden).
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

__all__ = ["listen_socket", "reserve_port", "supervise"]

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


def listen_socket(host: str, port: int, backlog: int = 511) -> socket.socket:
    """The one listening socket the workers inherit (nginx's backlog, 511)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def _start(argv: Sequence[str], pass_fds: Sequence[int]) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncconc",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
        pass_fds=pass_fds,
    )
    assert child.stdout is not None
    line = await child.stdout.readline()  # "serving ... at URL": it is listening
    if not line:
        code = await child.wait()
        raise UsageError(f"a server worker exited at start (exit status {code})")
    return child


async def supervise(
    argv: Sequence[str], workers: int, announce: str, pass_fds: Sequence[int] = ()
) -> None:
    """Run ``workers`` copies of ``python -m asyncconc *argv`` until cancelled.

    ``pass_fds``: descriptors every worker inherits (the listening socket).
    """
    running: dict[asyncio.Task[int], asyncio.subprocess.Process] = {}
    try:
        for _ in range(workers):
            child = await _start(argv, pass_fds)
            running[asyncio.create_task(child.wait())] = child
        print(announce, flush=True)
        while True:
            if len(running) == workers:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for ended in [task for task in running if task.done()]:
                child = running.pop(ended)
                print(
                    f"server worker {child.pid} exited (status {ended.result()}); replacing it",
                    flush=True,
                )
            await asyncio.sleep(_RESPAWN_PAUSE)
            while len(running) < workers:
                try:
                    child = await _start(argv, pass_fds)
                except UsageError as exc:
                    # Only the first start is fatal (a bad option, a port taken):
                    # a replacement killed while it starts is tried again.
                    print(f"{exc}; trying again", flush=True)
                    break
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
