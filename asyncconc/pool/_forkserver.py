"""Starting worker processes that the kernel ties to the pool's owner.

Two ways, both without :mod:`multiprocessing` (its fork server is shared by
the whole program, started from whichever thread asked first, and on 3.11
its ``__main__`` preload does nothing):

``forkserver`` (default)
    Each pool starts one small server process (``python -c``, from the
    thread running the pool's event loop). It imports the owner's main
    module once, as ``__mp_main__`` (the ``if __name__ == "__main__":``
    guard keeps the entry point from running), and the worker module, then
    forks a worker per request: a replacement costs a ``fork`` (a few ms),
    and the main script's top level runs once per pool, not once per worker.
``spawn``
    Every worker is a fresh interpreter that imports the main module itself.

Death chain, enforced by the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``,
Linux): the fork server gets SIGKILL when the owner's thread that started it
ends (the process dying ends every thread); each worker gets SIGKILL when
its parent (the fork server, or the owner under ``spawn``) ends. No Python
code has to run, so a worker stuck in a C call holding the GIL dies as fast
as an idle one. Each process checks ``getppid()`` right after the ``prctl``
in case its parent died before.

The fork server also reaps its workers and reports each exit status to the
owner (the owner is not their parent); when the owner's control socket
closes, it SIGKILLs the workers still running and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import pickle
import runpy
import select
import signal
import socket
import struct
import subprocess
import sys
import traceback
import types
from typing import Any

from asyncconc._forking import run_then_exit

__all__ = ["die_with_parent", "prepare", "preparation_data", "serve", "spawn_worker"]

_PR_SET_PDEATHSIG = 1
_LENGTH = struct.Struct("<Q")


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent thread ends; exit now if it has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(70)


def preparation_data(preload: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a new interpreter needs to import functions defined in ``__main__``.

    ``preload``: modules to import too (in the fork server: once, before any
    fork, so the workers share their pages instead of importing each its own).
    """
    data: dict[str, Any] = {
        "sys_path": list(sys.path),
        "sys_argv": sys.argv,
        "dir": os.getcwd(),
        "preload": list(preload),
    }
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        data["main_name"] = name
    else:
        path = getattr(main, "__file__", None)
        if path is not None:
            data["main_path"] = os.path.abspath(path)
    return data


def prepare(data: dict[str, Any]) -> None:
    """Import the owner's main module as ``__mp_main__``, as ``spawn`` does.

    Run under another name, so the script's ``if __name__ == "__main__":``
    block does not run; aliased as ``__main__`` so pickles that name it load.
    Then import the ``preload`` modules.
    """
    sys.path[:] = data["sys_path"]
    sys.argv[:] = data["sys_argv"]
    os.chdir(data["dir"])
    _import_main(data)
    for name in data.get("preload", ()):
        importlib.import_module(name)


def _import_main(data: dict[str, Any]) -> None:
    name = data.get("main_name")
    path = data.get("main_path")
    if name is not None:
        if name == "__main__" or name.endswith(".__main__"):
            return  # python -m package: its __main__ is the entry point itself
        namespace = runpy.run_module(name, run_name="__mp_main__", alter_sys=True)
    elif path is not None:
        if os.path.basename(os.path.dirname(path)) == "bin" and not path.endswith(".py"):
            return  # a console script (pytest, ...): nothing of ours to import
        namespace = runpy.run_path(path, run_name="__mp_main__")
    else:
        return  # interactive or ``-c``: nothing to import
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(namespace)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def command(entry: str, *args: object) -> list[str]:
    """``python -c`` running ``asyncconc.pool._forkserver.entry(*args)``."""
    call = f"from asyncconc.pool._forkserver import {entry}; {entry}{args!r}"
    return [sys.executable, "-c", call]


def start(entry: str, sock: socket.socket, *args: object) -> subprocess.Popen[bytes]:
    """Start ``entry(fd, owner_pid, *args)`` in a new interpreter holding ``sock``."""
    return subprocess.Popen(
        command(entry, sock.fileno(), os.getpid(), *args),
        pass_fds=[sock.fileno()],
        stdin=subprocess.DEVNULL,
    )


def send_message(sock: socket.socket, message: object, fds: list[int] | None = None) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _reply(sock: socket.socket, message: object) -> None:
    # Blocking: the owner reads its end from its loop at once; a full buffer
    # would mean the owner is gone or stuck, and then we die with it.
    with contextlib.suppress(OSError):
        sock.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


# -- the fork server process -----------------------------------------------


def serve(fd: int, owner: int) -> None:
    """Fork server main: preload, then fork a worker per request until EOF."""
    die_with_parent(owner)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctrl = socket.socket(fileno=fd)
    ctrl.setblocking(True)
    try:
        data = pickle.loads(ctrl.recv(1 << 20))
        prepare(data)
        from asyncconc.pool import _worker  # noqa: F401  (preloaded for the forks)

        # What is loaded now is shared with every fork until written to; the
        # collector writes to every object it scans, so keep it off these.
        gc.freeze()
    except BaseException:
        _reply(ctrl, ("error", traceback.format_exc()))
        os._exit(1)
    _reply(ctrl, ("ready", os.getpid()))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: set[int] = set()
    me = os.getpid()
    while True:
        try:
            readable, _, _ = select.select([ctrl.fileno(), wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        _reap(ctrl, children)
        if ctrl.fileno() in readable:
            try:
                raw, fds, _, _ = socket.recv_fds(ctrl, 1 << 16, 4)
            except OSError:
                raw, fds = b"", []
            if not raw:
                break
            request = pickle.loads(raw)
            if request[0] == "fork":
                pid = os.fork()
                if pid == 0:
                    os.close(wake_r)
                    os.close(wake_w)
                    ctrl.close()
                    _run_worker(fds[0], me)
                for each in fds:
                    os.close(each)
                children.add(pid)
                _reply(ctrl, ("forked", request[1], pid))
            elif request[0] == "kill" and request[1] in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(request[1], signal.SIGKILL)
    # The owner closed the pool (or died): no worker outlives it.
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    os._exit(0)


def _reap(ctrl: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _reply(ctrl, ("exit", pid, os.waitstatus_to_exitcode(status)))


def _run_worker(fd: int, parent: int) -> None:
    """In a fork of the server: become a worker, never return."""

    def worker() -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        die_with_parent(parent)
        from asyncconc.pool import _worker

        _worker.main(socket.socket(fileno=fd))

    run_then_exit(worker)


def spawn_worker(fd: int, owner: int) -> None:
    """``spawn``: a fresh interpreter reads its preparation data, then serves."""
    die_with_parent(owner)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    header = _recv_exactly(sock, _LENGTH.size)
    data = pickle.loads(_recv_exactly(sock, _LENGTH.unpack(header)[0]))
    prepare(data)
    from asyncconc.pool import _worker

    _worker.main(sock)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def send_preparation(sock: socket.socket, preload: tuple[str, ...] = ()) -> None:
    """The first bytes a ``spawn`` worker reads on its socket (blocking send)."""
    data = pickle.dumps(preparation_data(preload), protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            os._exit(0)  # the owner is gone
        got += n
    return bytes(buffer)
