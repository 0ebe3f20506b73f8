"""The two pool errors that are also ``BrokenProcessPool``s.

Apart from :mod:`asyncconc._errors` (which loads them on first use) because
``concurrent.futures.process`` imports :mod:`multiprocessing`, which a
download never needs.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

from asyncconc._errors import PoolError

__all__ = ["BrokenPoolError", "WorkerCrashedError"]


class BrokenPoolError(PoolError, BrokenProcessPool):
    """The pool cannot run tasks any more: its initializer failed, or its fork server died.

    Also a :class:`concurrent.futures.process.BrokenProcessPool` (so a
    ``BrokenExecutor``), as ``ProcessPoolExecutor`` raises in those cases.
    """


class WorkerCrashedError(PoolError, BrokenProcessPool):
    """The worker process running the task died (signal, ``os._exit``, crash).

    Only that task fails (the worker is replaced and the pool goes on); it is
    also a ``BrokenProcessPool``, which ``ProcessPoolExecutor`` raises when a
    worker dies, so code written for it catches this too.
    """
