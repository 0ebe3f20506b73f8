"""``asyncconc.cli.exit_now``: the command line's exit skips Python's teardown.

What it must still do is what a normal exit does for the program's output
and its children: the exit code, everything printed reaching a pipe, the
``atexit`` handlers, and waiting for threads that still run. Each test runs
a real interpreter.
"""

from __future__ import annotations

import os
import pstats
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def run(code: str) -> subprocess.CompletedProcess[str]:
    # Buffered output, as by default: what a bare os._exit would lose.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("code", [0, 1, 2, 130])
def test_the_exit_code_is_kept(code: int) -> None:
    done = run(f"from asyncconc.cli import exit_now; exit_now({code})")
    assert done.returncode == code, done.stderr


def test_buffered_output_reaches_a_pipe_whole() -> None:
    # 200,000 lines sit in stdout's buffer (a pipe is block-buffered) and on
    # stderr when exit_now is called: a bare os._exit would lose them.
    done = run(
        """
        import sys
        from asyncconc.cli import exit_now
        for i in range(200_000):
            print(i)
        print("last words", file=sys.stderr, end="")
        exit_now(0)
        """
    )
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines == [str(i) for i in range(200_000)]
    assert done.stderr == "last words"


def test_atexit_handlers_run_in_reverse_order() -> None:
    done = run(
        """
        import atexit
        from asyncconc.cli import exit_now
        atexit.register(print, "registered first")
        atexit.register(print, "registered second")
        exit_now(3)
        """
    )
    assert done.returncode == 3
    assert done.stdout.splitlines() == ["registered second", "registered first"]


def test_a_thread_still_running_is_waited_for() -> None:
    done = run(
        """
        import threading
        from asyncconc.cli import exit_now
        started = threading.Event()
        def work():
            started.wait()
            print("the thread finished", flush=True)
        threading.Thread(target=work).start()
        started.set()
        exit_now(4)
        """
    )
    assert done.returncode == 4
    assert done.stdout == "the thread finished\n"


def test_a_profiler_still_gets_to_write_its_results(tmp_path: Path) -> None:
    # python -m cProfile writes its file after the program's code returned.
    out = tmp_path / "run.prof"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "asyncconc", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
    assert pstats.Stats(str(out)).get_stats_profile().func_profiles


def test_output_that_cannot_be_written_makes_a_clean_exit_fail() -> None:
    # stdout closed under the program: Python's own exit says 120.
    done = run(
        """
        import os, sys
        from asyncconc.cli import exit_now
        print("lost")
        os.close(1)
        exit_now(0)
        """
    )
    assert done.returncode == 120


def test_python_m_asyncconc_exits_through_it() -> None:
    # The teardown skipped is observable: a finalizer of a module-level
    # object, which the interpreter's teardown would call, is not called.
    done = run(
        """
        import runpy, sys
        class Noisy:
            def __del__(self):
                print("teardown ran")
        sys.modules["__main__"].keep = Noisy()
        sys.argv = ["asyncconc", "--version"]
        runpy.run_module("asyncconc", run_name="__main__")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "teardown ran" not in done.stdout
    assert done.stdout.strip()  # the version was printed
