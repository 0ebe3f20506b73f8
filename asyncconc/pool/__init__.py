"""Worker processes with one event loop each: see :class:`LoopPool`."""

from asyncconc.pool._api import LoopPool
from asyncconc.pool._executor import LoopPoolExecutor, PoolExecutor
from asyncconc.pool._kernel import partial_sum, split_range

__all__ = ["LoopPool", "LoopPoolExecutor", "PoolExecutor", "partial_sum", "split_range"]
