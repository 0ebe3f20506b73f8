"""The loop core: uvloop when installed, asyncio otherwise, SIGTERM like Ctrl-C."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from asyncconc._runner import loop_factory, resolve_loop, run


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_loop_when_asked() -> None:
    assert run(_loop_module(), loop="asyncio").startswith("asyncio")


def test_auto_prefers_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    del uvloop
    assert resolve_loop("auto") == "uvloop"
    assert run(_loop_module(), loop="auto").startswith("uvloop")


def test_unknown_loop_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown event loop 'tokio'"):
        loop_factory("tokio")


def test_unknown_loop_name_closes_the_coroutine() -> None:
    coro = _loop_module()
    with pytest.raises(ValueError, match="unknown event loop"):
        run(coro, loop="nope")
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"


def test_run_leaves_no_loop_set() -> None:
    run(_loop_module(), loop="asyncio")
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_sigterm_unwinds_main_like_ctrl_c(loop: str, tmp_path: os.PathLike[str]) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    marker = os.path.join(tmp_path, "cleaned")
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from asyncconc._runner import run
        async def main():
            try:
                print("ready", flush=True)
                await asyncio.sleep(60)
            finally:
                open({marker!r}, "w").close()
        try:
            run(main(), loop={loop!r})
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 130
    assert os.path.exists(marker), "finally block did not run"
