"""Worker processes with one event loop each: see :class:`LoopPool`.

:class:`DaskPool` offers the same calls on a Dask cluster (extra
``asyncconc[dask]``; ``distributed`` is imported only when one is created).

The names are loaded on first use (PEP 562): ``asyncconc.pool._kernel``,
which the command line needs to describe ``sum``, must not cost every
command the pool machinery and :mod:`multiprocessing`; and a worker process
imports ``asyncconc.pool._worker``, and with it this package, and needs
neither the pool's owner side nor the Dask and executor wrappers.
"""

import typing as _typing

from asyncconc import _lazy

if _typing.TYPE_CHECKING:
    from asyncconc.pool._api import LoopPool
    from asyncconc.pool._backend import PoolBackend
    from asyncconc.pool._dask import DaskPool
    from asyncconc.pool._executor import LoopPoolExecutor, PoolExecutor
    from asyncconc.pool._kernel import partial_sum, split_range

_LAZY = {
    "DaskPool": "asyncconc.pool._dask",
    "LoopPool": "asyncconc.pool._api",
    "LoopPoolExecutor": "asyncconc.pool._executor",
    "PoolBackend": "asyncconc.pool._backend",
    "PoolExecutor": "asyncconc.pool._executor",
    "partial_sum": "asyncconc.pool._kernel",
    "split_range": "asyncconc.pool._kernel",
}


__all__ = [
    "DaskPool",
    "LoopPool",
    "LoopPoolExecutor",
    "PoolBackend",
    "PoolExecutor",
    "partial_sum",
    "split_range",
]

__getattr__, __dir__ = _lazy.attach(__name__, _LAZY, globals(), __all__)
