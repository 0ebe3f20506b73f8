"""Forking this process into a clean server child, where that is safe.

A server process (a fork server, say) forked from a program that has
already imported what the server needs starts in milliseconds, where a
fresh interpreter spends its first second importing. Forking is safe only
while this process runs a single OS thread: with another thread running,
the child may inherit a lock that thread held, and never see it released.
So :func:`fork_server` forks only when ``/proc/self/task`` lists one thread
(Linux only) and returns ``None`` otherwise: the caller then starts its
server the usual way (a new interpreter).

What the child keeps of this process, and what it drops, before it runs
the server (the child never returns: it ends with ``os._exit``):

* signals: the wakeup fd is unset and every handler this process's Python
  code installed is back to its default (``SIGINT`` to
  :func:`signal.default_int_handler`, the others to ``SIG_DFL``), as in a
  new interpreter; ignored signals stay ignored, as across ``exec``;
* its life: ``PR_SET_PDEATHSIG`` kills it with SIGKILL when the thread that
  forked it ends (this process's only thread, so when the process ends);
* memory: every object is frozen out of the cyclic collector
  (:func:`gc.freeze`), so this process's garbage is never collected, and
  never finalized, in the child or in the children it forks; the pages stay
  shared with this process until either side writes to them;
* file descriptors: each one except 0, 1, 2 and those the server needs is
  made a descriptor of ``/dev/null`` in place (``dup2``). The child holds no
  socket, pipe or file of this process's any longer, so one this process
  closes really closes (its peer sees EOF; a listening port is freed). Yet
  no number is freed: a Python object copied from this process that still
  holds one, and closes it, closes ``/dev/null``, never a descriptor the
  child has opened since.

Standard streams are flushed before the fork, so that text this process
buffered is not written a second time by the child.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import traceback
from collections.abc import Callable, Collection
from typing import NoReturn

__all__ = ["fork_server", "single_threaded"]


def single_threaded() -> bool:
    """Whether this process runs one OS thread (Linux; elsewhere ``False``)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def fork_server(serve: Callable[[], object], keep: Collection[int] = ()) -> int | None:
    """Run ``serve()`` in a clean fork of this process; its pid, or ``None``.

    ``None`` (nothing forked) when this process runs more than one thread,
    or is not on Linux. ``keep``: the descriptors the server needs, left as
    they are (0, 1 and 2 always are). The child ends when ``serve`` returns
    (exit status 0) or raises (the traceback on stderr, status 1; a
    ``SystemExit`` gives its own code).
    """
    if not single_threaded():
        return None
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    parent = os.getpid()
    # No collection between the fork and the freeze in the child: it would
    # finalize this process's garbage there (closing its sockets, say).
    collecting = gc.isenabled()
    gc.disable()
    try:
        pid = os.fork()
    except BaseException:
        if collecting:
            gc.enable()
        raise
    if pid != 0:
        if collecting:
            gc.enable()
        return pid

    def child() -> None:
        gc.freeze()
        if collecting:
            gc.enable()
        _reset_signals()
        _die_with(parent)
        _release_descriptors(keep)
        serve()

    run_then_exit(child)


def run_then_exit(body: Callable[[], object]) -> NoReturn:
    """In a forked child: run ``body``, then ``os._exit``, whatever happens.

    Status 0 when ``body`` returns, a ``SystemExit``'s own code, or 1 with
    the traceback on stderr; the streams are flushed first (``os._exit``
    does not), and nothing of the parent's (atexit, finalizers) runs.
    """
    code = 1
    try:
        body()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reset_signals() -> None:
    """Handlers as a new interpreter has them: ours gone, ignored ones kept."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (ValueError, OSError):
            continue
        if not callable(handler):
            continue  # SIG_DFL, SIG_IGN, or a handler set outside Python
        if signum == signal.SIGINT:
            if handler is signal.default_int_handler:
                continue
            default: Callable[..., object] | int = signal.default_int_handler
        else:
            default = signal.SIG_DFL
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, default)


def _die_with(parent: int) -> None:
    # Imported here: the pool's process module is not needed until a fork.
    from asyncconc.pool._forkserver import die_with_parent

    die_with_parent(parent)


def _release_descriptors(keep: Collection[int]) -> None:
    """``dup2`` ``/dev/null`` over every descriptor but 0, 1, 2 and ``keep``."""
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        spared = {0, 1, 2, devnull, *keep}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in spared:
                continue
            try:
                os.fstat(fd)  # the listing's own descriptor is closed by now
            except OSError:
                continue
            os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)
