"""The pytest11 plugin gives users' test suites a loopback file server.

Each test here runs a small user suite in a subprocess (pytester), written
as a user would from the README, in the configurations that used to hang:
pytest-asyncio strict and auto mode, module-scoped loops with
function-scoped fixtures, synchronous tests and anyio tests.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

USER_SUITE = """
import urllib.request

import aiohttp
import pytest

import asyncconc


def get(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def test_sync_test_gets_answers(file_server):
    file_server.add_bytes("s.txt", b"sync")
    assert get(file_server.url("s.txt")) == b"sync"


@pytest.mark.asyncio
async def test_asyncio_download(file_server, tmp_path):
    served = file_server.add_bytes("hello.txt", b"hi there")
    results = await asyncconc.download([file_server.url("hello.txt")], tmp_path)
    assert [r.status for r in results] == ["ok"]
    assert results[0].sha256 == served.sha256


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_with_function_fixture(file_server):
    file_server.add_bytes("m.txt", b"module")
    async with aiohttp.ClientSession() as session:
        async with session.get(file_server.url("m.txt", fail=1)) as response:
            assert response.status == 503
        async with session.get(file_server.url("m.txt", fail=1)) as response:
            assert await response.read() == b"module"


@pytest.mark.anyio
async def test_anyio_test(file_server):
    file_server.add_bytes("a.txt", b"anyio")
    async with aiohttp.ClientSession() as session:
        async with session.get(file_server.url("a.txt")) as response:
            assert await response.read() == b"anyio"


def test_factory_starts_more_servers(file_server_factory):
    one = file_server_factory(files={"a": b"1"})
    two = file_server_factory(files={"a": b"2"})
    assert one.port != two.port
    assert get(one.url("a")) + get(two.url("a")) == b"12"


def test_module_server_is_shared_1(file_server_module):
    file_server_module.add_bytes("shared.txt", b"kept")


def test_module_server_is_shared_2(file_server_module, file_server_session):
    assert get(file_server_module.url("shared.txt")) == b"kept"
    file_server_session.add_bytes("x", b"x")
    assert get(file_server_session.url("x")) == b"x"
"""

CONFIGS = {
    "strict": "[pytest]\nasyncio_default_fixture_loop_scope = function\n",
    "auto": "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
    "auto-module-loops": (
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = module\n"
        "asyncio_default_test_loop_scope = module\n"
    ),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_fixtures_work_in_every_configuration(pytester: pytest.Pytester, config: str) -> None:
    pytester.makeini(CONFIGS[config])
    pytester.makepyfile(test_user=USER_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout", "60")
    result.assert_outcomes(passed=7)


def test_unmet_expectations_fail_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        def test_expects_a_request(file_server):
            file_server.expect("never.txt")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*any method /never.txt: expected 1 time(s), got 0*"])


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_x(file_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncconc")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'file_server' not found*"])


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, asyncconc.testing.pytest_plugin\n"
        "heavy = [m for m in ('aiohttp', 'aiofiles', 'asyncconc.testing._fileserver') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"
