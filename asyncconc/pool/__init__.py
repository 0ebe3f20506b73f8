"""Worker processes with one event loop each: see :class:`LoopPool`.

:class:`DaskPool` offers the same calls on a Dask cluster (extra
``asyncconc[dask]``; ``distributed`` is imported only when one is created).

Names are imported on first use (PEP 562): a worker process imports
``asyncconc.pool._worker``, and with it this package, and needs neither the
pool's owner side nor the Dask and executor wrappers (together ~50 ms of
imports, in the fork server and in every parent that only uses LoopPool).
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
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

_MODULES = {
    "DaskPool": "_dask",
    "LoopPool": "_api",
    "LoopPoolExecutor": "_executor",
    "PoolBackend": "_backend",
    "PoolExecutor": "_executor",
    "partial_sum": "_kernel",
    "split_range": "_kernel",
}


def __getattr__(name: str) -> _typing.Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncconc.pool' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"asyncconc.pool.{module}"), name)
    globals()[name] = value
    return value
