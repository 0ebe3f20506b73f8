"""Worker processes with one event loop each: see :class:`LoopPool`.

:class:`DaskPool` offers the same calls on a Dask cluster (extra
``asyncconc[dask]``; ``distributed`` is imported only when one is created).
"""

from asyncconc.pool._api import LoopPool
from asyncconc.pool._backend import PoolBackend
from asyncconc.pool._dask import DaskPool
from asyncconc.pool._executor import LoopPoolExecutor, PoolExecutor
from asyncconc.pool._kernel import partial_sum, split_range

__all__ = [
    "DaskPool",
    "LoopPool",
    "LoopPoolExecutor",
    "PoolBackend",
    "PoolExecutor",
    "partial_sum",
    "split_range",
]
