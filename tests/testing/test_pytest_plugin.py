"""The pytest11 plugin gives users' async test suites a loopback file server."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_plugin_fixtures_work_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        test_user="""
        import asyncconc

        async def test_download_offline(file_server, tmp_path):
            served = file_server.add_bytes("hello.txt", b"hi there")
            results = await asyncconc.download([file_server.url("hello.txt")], tmp_path)
            assert [r.status for r in results] == ["ok"]
            assert results[0].sha256 == served.sha256
            assert (tmp_path / "hello.txt").read_bytes() == b"hi there"

        async def test_factory_starts_more_servers(file_server_factory):
            one = file_server_factory(files={"a": b"1"})
            two = file_server_factory(files={"a": b"2"})
            assert one.port != two.port
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
