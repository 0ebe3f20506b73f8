"""A DaskPool chunk's result bytes, turned back into results and an exception."""

from __future__ import annotations

import pickle
from typing import Any

from asyncconc._errors import PicklingError, PoolError
from asyncconc.pool import _protocol as wire

__all__ = ["INIT_FAILED", "Outcome", "decode"]

# The error kind a worker reports when the pool's initializer failed there.
INIT_FAILED = "init-failed"

Outcome = tuple[list[Any], BaseException | None, float]


def decode(fn_name: str, data: bytes) -> tuple[Outcome, PoolError | None]:
    """``(results, error, elapsed)``, and the pool's breakage if the initializer failed.

    The task's own exception comes back as itself with the worker traceback
    as a note; one that cannot be unpickled here becomes :class:`PicklingError`.
    """
    try:
        results, error, elapsed = pickle.loads(data)
    except Exception as exc:
        message = f"a result of {fn_name} could not be unpickled: {exc!r}"
        return ([], PicklingError(message), 0.0), None
    if error is None:
        return (results, None, elapsed), None
    kind, blob, text = error
    if kind == INIT_FAILED:
        cause = _loads_exception(blob, fn_name)
        cause.add_note(f"\nRemote traceback:\n{text.rstrip()}")
        broken = PoolError("the pool's initializer failed in a Dask worker")
        broken.__cause__ = cause
        failure = PoolError(str(broken))
        failure.__cause__ = cause
        return (results, failure, elapsed), broken
    if kind == wire.ERR_PICKLING:
        return (results, PicklingError(f"{fn_name}: {blob}"), elapsed), None
    raised = _loads_exception(blob, fn_name)
    raised.add_note(f"\nRemote traceback (Dask worker):\n{text.rstrip()}")
    return (results, raised, elapsed), None


def _loads_exception(blob: bytes, fn_name: str) -> BaseException:
    exc: object
    try:
        exc = pickle.loads(blob)
    except Exception as problem:
        exc = PicklingError(f"{fn_name} raised an exception that cannot be unpickled here")
        exc.__cause__ = problem
    if not isinstance(exc, BaseException):
        exc = PoolError(f"{fn_name} raised a non-exception: {exc!r}")
    return exc
