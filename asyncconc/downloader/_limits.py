"""Open-file limits: how many downloads fit, and raising the soft limit.

Kept apart from the pipeline so the CLI can check the limit before it
imports aiohttp (an empty list must start fast).
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["FDS_PER_DOWNLOAD", "FD_RESERVE", "fd_concurrency", "raise_open_file_limit"]

# File descriptors one download may hold at once: its socket, its .part and,
# briefly, the .part.meta sidecar.
FDS_PER_DOWNLOAD = 3
# Kept free for everything else: the loop, the executor, the resolver, stdio,
# the report, a worker's socket to its parent.
FD_RESERVE = 64


def _open_fds() -> int:
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(folder))
    return 0


def fd_concurrency(requested: int) -> int:
    """``requested``, lowered to the downloads the open-file limit leaves room for.

    Each download may hold :data:`FDS_PER_DOWNLOAD` descriptors;
    :data:`FD_RESERVE` and the descriptors already open are kept free. At
    least 1. Without :mod:`resource` (Windows) ``requested`` is returned.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return requested
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    room = soft - _open_fds() - FD_RESERVE
    return max(1, min(requested, room // FDS_PER_DOWNLOAD))


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit.

    For programs (the CLI), not for the library: the limit is process-wide
    state that an embedding service owns. Returns (old, new) soft limits,
    or ``None`` when nothing changed or it is not possible.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit is capped: select()-era code and the kernel's
    # nr_open both dislike huge descriptor numbers.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft == resource.RLIM_INFINITY or target <= soft:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return None
    return soft, target
