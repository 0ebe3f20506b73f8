"""Owner side of starting workers: a per-pool fork server, or ``spawn``.

A launcher starts a worker on a socket it is given, reports its pid and,
later, its exit code (``on_forked(token, pid)``, ``on_exit(pid, code)``,
both called on the pool's loop), kills workers, and on :meth:`close` ends
every process it started. See :mod:`asyncconc.pool._forkserver` for the
processes themselves and the kernel-enforced death chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import subprocess
from collections.abc import Callable

from asyncconc._errors import PoolError
from asyncconc.pool import _forkserver

__all__ = ["ForkServerLauncher", "Launcher", "SpawnLauncher"]

OnForked = Callable[[int, int], None]
OnExit = Callable[[int, "int | None"], None]


class Launcher:
    """The interface both launchers share."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_forked: OnForked,
        on_exit: OnExit,
        on_lost: Callable[[str], None],
        *,
        preload: tuple[str, ...] = (),
    ) -> None:
        self._loop = loop
        self._preload = preload  # modules the workers import before they serve
        self._on_forked = on_forked
        self._on_exit = on_exit
        self._on_lost = on_lost
        self._pidfds: dict[int, int] = {}  # pid -> pidfd, for kills that cannot hit a reused pid

    async def start(self, timeout: float) -> None:
        """Make the launcher ready to start workers (may take ~0.3 s)."""

    def launch(self, token: int, theirs: socket.socket, ours: socket.socket) -> None:
        raise NotImplementedError

    def server_pids(self) -> list[int]:
        return []

    def kill(self, pid: int) -> None:
        pidfd = self._pidfds.get(pid)
        with contextlib.suppress(ProcessLookupError, OSError):
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Kill every process started; idempotent and synchronous."""

    def _track(self, pid: int) -> None:
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self._pidfds[pid] = os.pidfd_open(pid)

    def _untrack(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            os.close(pidfd)


class ForkServerLauncher(Launcher):
    """One fork server per pool, tied to the thread running the pool's loop."""

    _ctrl: socket.socket | None = None
    _server: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._server = _forkserver.start("serve", theirs)
        finally:
            theirs.close()
        self._ctrl = ours
        ours.setblocking(False)
        data = pickle.dumps(
            _forkserver.preparation_data(self._preload), protocol=pickle.HIGHEST_PROTOCOL
        )
        ours.send(data)
        try:
            async with asyncio.timeout(timeout):
                reply = pickle.loads(await self._loop.sock_recv(ours, 1 << 20))
        except TimeoutError:
            raise PoolError(
                f"the pool's fork server did not start within {timeout:g} s (importing the "
                "main module took longer; raise init_timeout= to allow more)"
            ) from None
        except (EOFError, pickle.UnpicklingError):
            raise PoolError("the pool's fork server exited while starting") from None
        if reply[0] != "ready":
            raise PoolError(f"the pool's fork server could not start:\n{reply[1]}")
        self._loop.add_reader(ours.fileno(), self._on_readable)

    def server_pids(self) -> list[int]:
        return [] if self._server is None else [self._server.pid]

    def launch(self, token: int, theirs: socket.socket, ours: socket.socket) -> None:
        assert self._ctrl is not None
        request = pickle.dumps(("fork", token))
        self._ctrl.setblocking(True)  # a short message; the server reads it at once
        try:
            socket.send_fds(self._ctrl, [request], [theirs.fileno()])
        finally:
            self._ctrl.setblocking(False)

    def _on_readable(self) -> None:
        ctrl = self._ctrl
        assert ctrl is not None
        while True:
            try:
                raw = ctrl.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                raw = b""
            if not raw:
                self._loop.remove_reader(ctrl.fileno())
                code = None if self._server is None else self._server.poll()
                self._on_lost(f"the pool's fork server died (exit status {code})")
                return
            message = pickle.loads(raw)
            if message[0] == "forked":
                self._track(message[2])
                self._on_forked(message[1], message[2])
            elif message[0] == "exit":
                self._untrack(message[1])
                self._on_exit(message[1], message[2])

    def close(self) -> None:
        if self._ctrl is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._ctrl.fileno())
            self._ctrl.close()
            self._ctrl = None
        for pid in list(self._pidfds):
            self.kill(pid)
            self._untrack(pid)
        if self._server is not None:
            # Its workers die with it (PR_SET_PDEATHSIG), whatever they do.
            self._server.kill()
            self._server.wait()
            self._server = None


class SpawnLauncher(Launcher):
    """Every worker a fresh interpreter, a child of this process."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_forked: OnForked,
        on_exit: OnExit,
        on_lost: Callable[[str], None],
        *,
        preload: tuple[str, ...] = (),
    ) -> None:
        super().__init__(loop, on_forked, on_exit, on_lost, preload=preload)
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def launch(self, token: int, theirs: socket.socket, ours: socket.socket) -> None:
        child = _forkserver.start("spawn_worker", theirs)
        self._children[child.pid] = child
        _forkserver.send_preparation(ours, self._preload)
        self._track(child.pid)
        pidfd = self._pidfds.get(child.pid)
        if pidfd is not None:
            self._loop.add_reader(pidfd, self._reap, child.pid)
        self._loop.call_soon(self._on_forked, token, child.pid)

    def _reap(self, pid: int) -> None:
        pidfd = self._pidfds.get(pid)
        if pidfd is not None:
            self._loop.remove_reader(pidfd)
        child = self._children.pop(pid)
        code = child.wait()
        self._untrack(pid)
        self._on_exit(pid, code)

    def kill(self, pid: int) -> None:
        child = self._children.get(pid)
        if child is not None and child.returncode is None:
            super().kill(pid)

    def close(self) -> None:
        for pid, child in list(self._children.items()):
            pidfd = self._pidfds.get(pid)
            if pidfd is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(pidfd)
            if child.returncode is None:
                child.kill()
            child.wait()
            self._untrack(pid)
        self._children.clear()
