"""Run a coroutine on uvloop when it is installed, else on asyncio's loop.

Nothing here installs a global event-loop policy: each call builds its own
:class:`asyncio.Runner` with a ``loop_factory``, so importing asyncconc never
changes how the host application's loops are made.

SIGINT is handled by :class:`asyncio.Runner` itself (the main task is
cancelled; a second Ctrl-C raises at once). :func:`run` adds the same for
SIGTERM so that ``kill PID`` also unwinds through ``finally`` blocks: partial
files are kept for a resume and reports are written. Both surface as
:class:`KeyboardInterrupt` so callers have one thing to catch.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

# asyncio is imported where a loop is made, not here: the command line
# imports this module for LOOP_NAMES, and a run that has nothing to do
# (an empty URL list, --help, a usage error) never needs asyncio (~50 ms).
if TYPE_CHECKING:
    import asyncio

__all__ = ["LoopName", "loop_factory", "resolve_loop", "run"]

T = TypeVar("T")
LoopName = Literal["auto", "uvloop", "asyncio"]
LOOP_NAMES: tuple[str, ...] = get_args(LoopName)


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def resolve_loop(loop: str = "auto") -> Literal["uvloop", "asyncio"]:
    """Which loop ``loop`` means on this machine.

    Raises :class:`ValueError` for an unknown name and :class:`RuntimeError`
    when ``"uvloop"`` is asked for but not installed.
    """
    if loop not in LOOP_NAMES:
        raise ValueError(f"unknown event loop {loop!r}; choose from {', '.join(LOOP_NAMES)}")
    if loop == "asyncio":
        return "asyncio"
    if _uvloop_factory() is not None:
        return "uvloop"
    if loop == "uvloop":
        raise RuntimeError("uvloop was asked for but is not installed (pip install uvloop)")
    return "asyncio"


def loop_factory(loop: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """A zero-argument callable making a new loop of the resolved kind."""
    import asyncio

    if resolve_loop(loop) == "uvloop":
        factory = _uvloop_factory()
        assert factory is not None
        return factory
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], *, loop: str = "auto", debug: bool | None = None) -> T:
    """Run ``main`` to completion on a fresh loop and close the loop.

    Raises :class:`KeyboardInterrupt` after SIGINT or SIGTERM, once ``main``
    has unwound.
    """
    import asyncio

    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()
        raise
    terminated = False

    async def _guarded() -> T:
        nonlocal terminated
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        running = asyncio.get_running_loop()
        installed = False
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                running.add_signal_handler(signal.SIGTERM, on_sigterm)
                installed = True
        try:
            return await main
        finally:
            if installed:
                running.remove_signal_handler(signal.SIGTERM)

    with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
        try:
            return runner.run(_guarded())
        except asyncio.CancelledError:
            if terminated:
                raise KeyboardInterrupt from None
            raise
