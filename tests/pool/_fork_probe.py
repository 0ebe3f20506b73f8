"""What a child of :func:`asyncconc._forking.fork_server` inherits, for test_forking.py.

Run as ``python -m tests.pool._fork_probe [--thread]``: prints one JSON
object, the child's view (or ``{"forked": false}`` when nothing forked).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import socket
import sys
import threading

from asyncconc._forking import fork_server

_PR_GET_PDEATHSIG = 2


def probe(report: int, sock: socket.socket) -> None:
    """In the child: its signals, death signal, collector and descriptors."""
    pdeathsig = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(_PR_GET_PDEATHSIG, ctypes.byref(pdeathsig), 0, 0, 0)
    view = {
        "forked": True,
        "wakeup_fd": signal.set_wakeup_fd(-1),
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "sigusr1_ignored": signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN,
        "pdeathsig": pdeathsig.value,
        "frozen": gc.get_freeze_count() > 0,
        "socket_fd": os.readlink(f"/proc/self/fd/{sock.fileno()}"),
        "report_fd": os.readlink(f"/proc/self/fd/{report}"),
    }
    os.write(report, json.dumps(view).encode())


def main() -> None:
    stop = threading.Event()
    if "--thread" in sys.argv:
        threading.Thread(target=stop.wait, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    sock = socket.create_server(("127.0.0.1", 0))
    report_r, report_w = os.pipe()
    pid = fork_server(lambda: probe(report_w, sock), keep=[report_w])
    os.close(report_w)
    if pid is None:
        print(json.dumps({"forked": False}))
    else:
        with os.fdopen(report_r, "rb") as pipe:
            view = json.loads(pipe.read() or b"{}")
        view["status"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        print(json.dumps(view))
    stop.set()
    for each in (sock, wake_r, wake_w):
        each.close()


if __name__ == "__main__":
    main()
