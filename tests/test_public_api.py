"""The public API: what ``asyncconc`` exports, and that it stays importable."""

from __future__ import annotations

import subprocess
import sys

import asyncconc


def test_all_is_sorted_and_unique() -> None:
    assert list(asyncconc.__all__) == sorted(set(asyncconc.__all__))


def test_every_exported_name_exists() -> None:
    missing = [name for name in asyncconc.__all__ if not hasattr(asyncconc, name)]
    assert missing == []


def test_public_names_are_exported() -> None:
    public = {
        name
        for name, value in vars(asyncconc).items()
        if not name.startswith("_") and not isinstance(value, type(asyncconc))
    }
    assert public <= set(asyncconc.__all__)


def test_every_error_derives_from_the_root() -> None:
    errors = [
        value
        for name in asyncconc.__all__
        if isinstance(value := getattr(asyncconc, name), type) and issubclass(value, Exception)
    ]
    assert errors, "no exception classes exported"
    assert all(issubclass(e, asyncconc.AsyncConcError) for e in errors)


def test_import_installs_no_event_loop_policy() -> None:
    code = (
        "import asyncio\n"
        "before = type(asyncio.get_event_loop_policy())\n"
        "import asyncconc, asyncconc.testing, asyncconc.cli\n"
        "asyncconc.cli.build_parser()\n"
        "assert type(asyncio.get_event_loop_policy()) is before, 'policy changed'\n"
        "print(before.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "uvloop" not in out.stdout


def test_importing_the_package_loads_neither_aiohttp_nor_the_pool() -> None:
    code = (
        "import sys, asyncconc\n"
        "heavy = [m for m in ('aiohttp', 'rich', 'asyncconc.pool') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "asyncconc.LoopPool, asyncconc.download\n"
        # Loaded on first use; aiohttp only once a request needs it (see
        # tests/download/test_imports.py).
        "assert 'asyncconc.downloader._pipeline' in sys.modules\n"
        "assert 'asyncconc.pool' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("asyncconc").joinpath("py.typed").is_file()
