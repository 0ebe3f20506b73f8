"""``python -m asyncconc download``: the CLI contract of issue 2.

Synchronous tests call ``asyncconc.cli.main`` in-process against a server on
its own thread; async tests run the CLI as a real child process against a
server on the test's loop (signals, memory, stdin, tracebacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from asyncconc.testing import FileServer
from tests.conftest import CliRun, files_under, run_cli_process, start_cli, wait_for_size

RunCli = Callable[..., CliRun]


def write_list(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def assert_usage_error(
    run: CliRun, *words: str, prog: str = "python -m asyncconc download"
) -> None:
    """argparse's shape: the sub-command's usage, then one ``PROG: error: ...`` line."""
    assert run.code == 2, run
    assert run.out == ""
    lines = run.err.strip().splitlines()
    assert lines[0].startswith(f"usage: {prog} "), run.err
    assert lines[-1].startswith(f"{prog}: error: "), run.err
    assert all(line.startswith(" ") for line in lines[1:-1]), run.err  # the usage, wrapped
    assert "Traceback" not in run.err
    for word in words:
        assert word in lines[-1]


def report_of(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


# -- exit codes and output -----------------------------------------------------------------


def test_all_ok_exits_0_with_one_line_per_file_and_a_summary(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    server = threaded_server
    for name in ("a.bin", "b.bin", "c.bin"):
        server.add_bytes(name, name.encode() * 100)
    urls = write_list(
        tmp_path / "urls.txt",
        "# three files",
        "",
        server.url("a.bin"),
        server.url("b.bin") + "  sub/b-renamed.bin",
        server.url("c.bin"),
    )
    run = run_cli("download", urls, "-o", tmp_path / "out")
    assert run.code == 0, run
    assert files_under(tmp_path / "out") == {"a.bin", "sub/b-renamed.bin", "c.bin"}
    lines = run.out.strip().splitlines()
    assert len(lines) == 4
    assert sorted(line.split()[0] for line in lines[:3]) == ["ok", "ok", "ok"]
    assert {line.split()[-1] for line in lines[:3]} == {"a.bin", "sub/b-renamed.bin", "c.bin"}
    assert "3 ok, 0 skipped, 0 failed" in lines[-1]
    assert run.err == ""


def test_rerun_skips_what_exists_and_exits_0(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    threaded_server.add_bytes("a.bin", b"a")
    urls = write_list(tmp_path / "urls.txt", threaded_server.url("a.bin") + " a.bin")
    assert run_cli("download", urls, "-o", tmp_path / "out").code == 0
    again = run_cli("download", urls, "-o", tmp_path / "out")
    assert again.code == 0
    assert again.out.splitlines()[0].startswith("skipped")
    assert "0 ok, 1 skipped, 0 failed" in again.out
    assert threaded_server.hits("a.bin") == 1


def test_any_failure_exits_1_and_the_rest_still_downloads(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    threaded_server.add_bytes("good.bin", b"good")
    urls = write_list(
        tmp_path / "urls.txt",
        threaded_server.url("missing.bin"),
        "ftp://example.com/x",
        threaded_server.url("good.bin"),
    )
    run = run_cli("download", urls, "-o", tmp_path / "out", "--retries", "0")
    assert run.code == 1
    assert (tmp_path / "out" / "good.bin").read_bytes() == b"good"
    failed = [line for line in run.out.splitlines() if line.startswith("failed")]
    assert len(failed) == 2
    assert any("HTTP 404" in line for line in failed)
    assert any("line 2:" in line and "ftp" in line for line in failed)
    assert "1 ok, 0 skipped, 2 failed" in run.out.splitlines()[-1]


def test_quiet_prints_only_failures_and_the_summary(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    threaded_server.add_bytes("good.bin", b"good")
    urls = write_list(
        tmp_path / "urls.txt",
        threaded_server.url("good.bin"),
        threaded_server.url("good.bin", status=403),
    )
    run = run_cli("download", urls, "-o", tmp_path / "out", "-q")
    assert run.code == 1
    lines = run.out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("failed")
    assert "HTTP 403" in lines[0]
    assert "1 ok, 0 skipped, 1 failed" in lines[1]


def test_an_empty_list_exits_0_and_says_so(tmp_path: Path, run_cli: RunCli) -> None:
    urls = write_list(tmp_path / "urls.txt", "# nothing", "")
    report = tmp_path / "r.json"
    run = run_cli("download", urls, "-o", tmp_path / "out", "--report", report)
    assert run.code == 0
    assert run.out == f"no URLs in {urls}\n"
    assert report_of(report) == []


def test_output_folder_defaults_to_the_current_one_and_is_created(
    threaded_server: FileServer,
    tmp_path: Path,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threaded_server.add_bytes("a.bin", b"a")
    urls = write_list(tmp_path / "urls.txt", threaded_server.url("a.bin"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert run_cli("download", urls).code == 0
    assert (work / "a.bin").read_bytes() == b"a"
    assert run_cli("download", urls, "-o", "new/deeper").code == 0
    assert (work / "new" / "deeper" / "a.bin").read_bytes() == b"a"


# -- the JSON report ----------------------------------------------------------------------


def test_the_report_lists_every_url_with_its_fields(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    server = threaded_server
    ok = server.add_bytes("ok.bin", b"fine" * 100)
    server.add_bytes("skip.bin", b"new")
    out = tmp_path / "out"
    out.mkdir()
    (out / "skip.bin").write_bytes(b"old!")
    urls = write_list(
        tmp_path / "urls.txt",
        server.url("ok.bin", fail=1),
        server.url("skip.bin") + " skip.bin",
        server.url("gone.bin"),
        "not-a-url",
    )
    report = tmp_path / "report.json"
    run = run_cli("download", urls, "-o", out, "--report", report, "--retries", "1")
    assert run.code == 1
    entries = report_of(report)
    assert [e["url"] for e in entries] == [
        server.url("ok.bin", fail=1),
        server.url("skip.bin"),
        server.url("gone.bin"),
        "not-a-url",
    ]
    for entry in entries:
        assert {"url", "path", "status", "bytes", "sha256", "attempts", "error", "seconds"} <= set(
            entry
        )
        assert isinstance(entry["seconds"], float | int)
        assert entry["seconds"] >= 0
    first, skipped, missing, invalid = entries
    assert first["status"] == "ok"
    assert (first["path"], first["bytes"], first["sha256"]) == ("ok.bin", ok.size, ok.sha256)
    assert (first["attempts"], first["error"]) == (2, None)
    assert (skipped["status"], skipped["path"], skipped["bytes"]) == ("skipped", "skip.bin", 4)
    assert skipped["error"] is None
    assert (missing["status"], missing["attempts"], missing["sha256"]) == ("failed", 1, None)
    assert "HTTP 404" in missing["error"]
    assert invalid["status"] == "failed"
    assert invalid["error"].startswith("line 4: ")


def test_the_report_says_where_colliding_lines_went(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    threaded_server.add_bytes("x/data.bin", b"one")
    threaded_server.add_bytes("y/data.bin", b"two")
    urls = write_list(
        tmp_path / "urls.txt", threaded_server.url("x/data.bin"), threaded_server.url("y/data.bin")
    )
    report = tmp_path / "r.json"
    assert run_cli("download", urls, "-o", tmp_path / "out", "--report", report).code == 0
    first, second = report_of(report)
    assert first["path"] == "data.bin"
    assert second["path"] == "data-2.bin"
    assert "data.bin" in second["note"]
    assert "data-2.bin" in second["note"]
    assert (tmp_path / "out" / "data.bin").read_bytes() == b"one"
    assert (tmp_path / "out" / "data-2.bin").read_bytes() == b"two"


# -- options --------------------------------------------------------------------------------


def test_headers_are_sent(threaded_server: FileServer, tmp_path: Path, run_cli: RunCli) -> None:
    threaded_server.add_bytes("a", b"a")
    urls = write_list(tmp_path / "urls.txt", threaded_server.url("a"))
    run = run_cli(
        "download",
        urls,
        "-o",
        tmp_path / "out",
        "--header",
        "Authorization: Bearer t0k",
        "--header",
        "X-Empty:",
    )
    assert run.code == 0
    (request,) = threaded_server.requests
    assert request.headers["Authorization"] == "Bearer t0k"
    assert request.headers["X-Empty"] == ""


def test_overwrite_and_no_resume(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    data = os.urandom(200_000)
    threaded_server.add_bytes("a.bin", data)
    threaded_server.add_bytes("b.bin", data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(b"old")
    (out / "b.bin.part").write_bytes(b"not a prefix of the file")
    urls = write_list(tmp_path / "urls.txt", threaded_server.url("a.bin"))
    assert run_cli("download", urls, "-o", out).code == 0
    assert (out / "a.bin").read_bytes() == b"old"
    assert run_cli("download", urls, "-o", out, "--overwrite").code == 0
    assert (out / "a.bin").read_bytes() == data

    urls_b = write_list(tmp_path / "urls-b.txt", threaded_server.url("b.bin"))
    assert run_cli("download", urls_b, "-o", out, "--no-resume").code == 0
    assert (out / "b.bin").read_bytes() == data
    assert "Range" not in threaded_server.requests_for("b.bin")[0].headers
    assert files_under(out) == {"a.bin", "b.bin"}


def test_resume_is_the_default(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    data = os.urandom(200_000)
    threaded_server.add_bytes("b.bin", data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.bin.part").write_bytes(data[:12_345])
    urls = write_list(tmp_path / "urls.txt", threaded_server.url("b.bin"))
    assert run_cli("download", urls, "-o", out).code == 0
    assert (out / "b.bin").read_bytes() == data
    assert threaded_server.requests_for("b.bin")[0].headers["Range"] == "bytes=12345-"


def test_retries_and_timeout_options_apply(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    threaded_server.add_generated("stall.bin", 100_000)
    threaded_server.add_bytes("flaky.bin", b"f")
    urls = write_list(
        tmp_path / "urls.txt",
        threaded_server.url("stall.bin", stall=1000),
        threaded_server.url("flaky.bin", fail=1),
    )
    report = tmp_path / "r.json"
    started = time.monotonic()
    run = run_cli(
        "download", urls, "-o", tmp_path / "out", "--retries", "0", "--timeout", "0.3",
        "--report", report,
    )  # fmt: skip
    assert run.code == 1
    assert time.monotonic() - started < 10
    stalled, flaky = report_of(report)
    assert stalled["status"] == "failed"
    assert "no data from 127.0.0.1:" in stalled["error"]
    assert (flaky["status"], flaky["attempts"]) == ("failed", 1)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_every_loop_runs_the_job(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli, loop: str
) -> None:
    threaded_server.add_generated("a.bin", 3_000_000)
    urls = write_list(tmp_path / "urls.txt", threaded_server.url("a.bin"))
    run = run_cli("download", urls, "-o", tmp_path / "out", "--loop", loop, "-j", "1")
    assert run.code == 0
    assert (tmp_path / "out" / "a.bin").stat().st_size == 3_000_000


def test_jobs_and_per_host_are_accepted(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    threaded_server.add_bytes("a", b"a")
    urls = write_list(
        tmp_path / "urls.txt", *[threaded_server.url("a", query={"n": i}) for i in range(5)]
    )
    report = tmp_path / "r.json"
    run = run_cli(
        "download", urls, "-o", tmp_path / "out", "-j", "2", "--per-host", "1", "--report", report
    )
    assert run.code == 0
    assert [e["path"] for e in report_of(report)] == ["a", "a-2", "a-3", "a-4", "a-5"]


def test_stdin_is_read_with_a_dash(
    threaded_server: FileServer,
    tmp_path: Path,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threaded_server.add_bytes("a.bin", b"from stdin")
    monkeypatch.setattr("sys.stdin", io.StringIO(threaded_server.url("a.bin") + " s.bin\n"))
    run = run_cli("download", "-", "-o", tmp_path / "out")
    assert run.code == 0
    assert (tmp_path / "out" / "s.bin").read_bytes() == b"from stdin"


# -- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-j", "0"], ["-j"]),
        (["-j", "many"], ["-j"]),
        (["-j", "1.5"], ["-j"]),
        (["--per-host", "0"], ["--per-host"]),
        (["--retries", "-1"], ["--retries"]),
        (["--retries", "x"], ["--retries"]),
        (["--timeout", "0"], ["--timeout"]),
        (["--timeout", "-3"], ["--timeout"]),
        (["--timeout", "soon"], ["--timeout"]),
        (["--timeout", "nan"], ["--timeout"]),
        (["--timeout", "inf"], ["--timeout"]),
        (["--header", "no colon"], ["--header"]),
        (["--header", ": value"], ["--header"]),
        (["--header", "Bad Name: v"], ["--header"]),
        (["--loop", "trio"], ["--loop"]),
        (["--bogus"], ["--bogus"]),
        (["--header", "Range: bytes=0-10"], ["--header", "Range"]),
        (["--header", "if-range: x"], ["--header"]),
    ],
)
def test_bad_option_values_are_usage_errors(
    tmp_path: Path, run_cli: RunCli, args: list[str], words: list[str]
) -> None:
    urls = write_list(tmp_path / "urls.txt", "http://127.0.0.1:9/x")
    assert_usage_error(run_cli("download", urls, "-o", tmp_path / "out", *args), *words)
    assert not (tmp_path / "out").exists()


def test_a_missing_urls_file_is_a_usage_error(tmp_path: Path, run_cli: RunCli) -> None:
    assert_usage_error(run_cli("download", tmp_path / "nope.txt"), "nope.txt")
    assert_usage_error(run_cli("download"), "URLS_FILE")
    # Bad input writes nothing: the -o folder is made only once the list is read.
    out = tmp_path / "out"
    assert_usage_error(run_cli("download", tmp_path / "nope.txt", "-o", out), "nope.txt")
    assert not out.exists()


def test_an_unreadable_urls_file_is_a_usage_error(tmp_path: Path, run_cli: RunCli) -> None:
    assert_usage_error(run_cli("download", tmp_path), "folder")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert_usage_error(run_cli("download", binary), "UTF-8")
    if os.geteuid() != 0:  # root reads anything
        locked = write_list(tmp_path / "locked.txt", "http://h/x")
        locked.chmod(0)
        assert_usage_error(run_cli("download", locked), "permission")


def test_an_output_that_is_a_file_is_a_usage_error(tmp_path: Path, run_cli: RunCli) -> None:
    urls = write_list(tmp_path / "urls.txt", "http://127.0.0.1:9/x")
    assert_usage_error(run_cli("download", urls, "-o", urls), "-o")


async def test_usage_errors_print_one_line_without_a_traceback(tmp_path: Path) -> None:
    urls = write_list(tmp_path / "urls.txt", "http://127.0.0.1:9/x")
    for args in (
        [str(tmp_path / "missing.txt")],
        [str(urls), "-j", "zero"],
        [str(urls), "--header", "nonsense"],
        [str(urls), "--timeout", "-1"],
    ):
        run = await run_cli_process("download", *args, cwd=tmp_path)
        assert_usage_error(run)


def test_an_unrecognized_argument_names_the_sub_command(tmp_path: Path, run_cli: RunCli) -> None:
    run = run_cli("download", tmp_path / "a", tmp_path / "b")
    assert_usage_error(run, "unrecognized arguments:", str(tmp_path / "b"))
    assert not (tmp_path / "a").exists()


def test_errors_show_the_usage_of_the_command_they_belong_to(run_cli: RunCli) -> None:
    assert_usage_error(run_cli(), "COMMAND", prog="python -m asyncconc")
    assert_usage_error(run_cli("sum", "-1"), "N must be 0 or more", prog="python -m asyncconc sum")
    run = run_cli("sum", "-1")
    assert "sum: sum:" not in run.err  # one prefix


def test_control_characters_in_arguments_are_shown_escaped(tmp_path: Path, run_cli: RunCli) -> None:
    run = run_cli("download", tmp_path / "x\x1b[2Jy.txt")
    assert_usage_error(run, "x\\x1b[2Jy.txt")
    assert "\x1b" not in run.err


def test_serve_on_a_file_says_it_is_a_file(tmp_path: Path, run_cli: RunCli) -> None:
    listing = write_list(tmp_path / "l.txt", "x")
    assert_usage_error(
        run_cli("serve", listing), "is a file, not a folder", prog="python -m asyncconc serve"
    )
    assert_usage_error(
        run_cli("serve", tmp_path / "nope"), "no such folder", prog="python -m asyncconc serve"
    )


def test_version_and_help_are_plain_text(run_cli: RunCli) -> None:
    from asyncconc import __version__

    run = run_cli("--version")
    assert (run.code, run.out) == (0, f"asyncconc {__version__}\n")
    for command in ([], ["download"], ["serve"], ["demo"], ["sum"]):
        run = run_cli(*command, "--help")
        assert run.code == 0
        assert run.out.startswith("usage: python -m asyncconc")
        for rest in ("``", ":func:", ":class:", ":meth:", ":mod:"):
            assert rest not in run.out, (command, run.out)


async def test_the_console_script_calls_itself_asyncconc(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("asyncconc")
    if not script.exists():
        pytest.skip("the package is not installed with its console script")
    proc = await asyncio.create_subprocess_exec(
        script, "download", stderr=asyncio.subprocess.PIPE, cwd=tmp_path
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert_usage_error(CliRun(2, "", err.decode()), "URLS_FILE", prog="asyncconc download")


def test_a_trailing_comment_is_accepted(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    threaded_server.add_bytes("c.bin", b"c" * 100)
    urls = write_list(
        tmp_path / "urls.txt",
        threaded_server.url("c.bin") + " c-named.bin # my comment",
        threaded_server.url("c.bin") + "\t#another",
    )
    run = run_cli("download", urls, "-o", tmp_path / "out")
    assert run.code == 0, run
    assert files_under(tmp_path / "out") == {"c-named.bin", "c.bin"}
    assert (tmp_path / "out" / "c-named.bin").read_bytes() == b"c" * 100


def test_a_space_inside_a_url_and_a_url_as_a_name_are_invalid_lines(
    threaded_server: FileServer, tmp_path: Path, run_cli: RunCli
) -> None:
    threaded_server.add_bytes("a.bin", b"a")
    threaded_server.add_bytes("b.bin", b"b")
    urls = write_list(
        tmp_path / "urls.txt",
        "http://exa mple.com/x",
        threaded_server.url("a.bin") + "\t" + threaded_server.url("b.bin"),
        threaded_server.base_url + "/ root.html",  # a root page under a name: fine
    )
    report = tmp_path / "r.json"
    run = run_cli("download", urls, "-o", tmp_path / "out", "--report", report)
    assert run.code == 1, run
    entries = report_of(report)
    assert "'http://exa mple.com/x': a space inside it?" in entries[0]["error"]
    assert entries[0]["attempts"] == 0
    assert "is a URL, not a name" in entries[1]["error"]
    assert entries[1]["attempts"] == 0
    assert threaded_server.hits("a.bin") == 0
    assert threaded_server.hits("b.bin") == 0
    assert not (tmp_path / "out" / "http:").exists()


# -- real processes: stdin, signals, memory ------------------------------------------------------


async def test_stdin_list_in_a_child_process(server: FileServer, tmp_path: Path) -> None:
    server.add_bytes("a.bin", b"a")
    server.add_bytes("b.bin", b"b")
    text = f"# from a pipe\n{server.url('a.bin')}\n{server.url('b.bin')} named.bin\n"
    run = await run_cli_process("download", "-", "-o", "out", cwd=tmp_path, input=text.encode())
    assert run.code == 0, run
    assert files_under(tmp_path / "out") == {"a.bin", "named.bin"}
    lines = run.out.strip().splitlines()
    assert len(lines) == 3  # one per file when stdout is a pipe, then the summary
    assert "2 ok, 0 skipped, 0 failed" in lines[-1]


async def test_non_utf8_stdin_is_a_usage_error(tmp_path: Path) -> None:
    run = await run_cli_process("download", "-", cwd=tmp_path, input=b"http://h/\xff\xfe\n")
    assert_usage_error(run, "stdin", "UTF-8")
    assert list(tmp_path.iterdir()) == []


async def test_a_reader_that_goes_away_does_not_stop_the_downloads(
    server: FileServer, tmp_path: Path
) -> None:
    # Like `download urls | head -1`: the first line is read, the pipe
    # closed; the files still arriving must be saved, without a traceback.
    for i in range(6):
        server.add_bytes(f"f{i}.bin", bytes([i]) * 1000)
    urls = write_list(
        tmp_path / "urls.txt",
        server.url("f0.bin"),
        *(server.url(f"f{i}.bin", delay=0.3) for i in range(1, 6)),
    )
    proc = await start_cli("download", urls, "-o", tmp_path / "out")
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"f0.bin" in first
        proc.stdout.feed_eof()
        transport = proc._transport  # type: ignore[attr-defined]
        transport.get_pipe_transport(1).close()  # the reader goes away
        stderr = await asyncio.wait_for(proc.stderr.read(), 30)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, stderr.decode()
    assert b"Traceback" not in stderr
    assert files_under(tmp_path / "out") == {f"f{i}.bin" for i in range(6)}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_stops_the_run_keeps_the_part_and_writes_the_report(
    server: FileServer, tmp_path: Path, sig: signal.Signals
) -> None:
    served = server.add_generated("big.bin", 8 * 1024 * 1024)
    server.add_bytes("small.bin", b"small")
    slow = server.url("big.bin", drip=0.02, drip_size=65536)  # ~3 MB/s: ~2.6 s in all
    urls = write_list(tmp_path / "urls.txt", server.url("small.bin"), slow)
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    proc = await start_cli("download", urls, "-o", out, "--report", report)
    try:
        await wait_for_size(out / "big.bin.part", 1024 * 1024)  # the first batch is on disk
        signalled = time.monotonic()
        proc.send_signal(sig)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 10)
        stopped = time.monotonic() - signalled
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, stderr.decode()
    assert stopped < 4, stopped
    print(f"stopped {stopped:.2f} s after {sig.name}")
    assert b"Traceback" not in stderr
    kept = (out / "big.bin.part").stat().st_size
    assert 1024 * 1024 <= kept < served.size
    assert not (out / "big.bin").exists()
    assert (out / "small.bin").read_bytes() == b"small"
    assert "interrupted" in stdout.decode().splitlines()[-1]
    small, big = report_of(report)
    assert small["status"] == "ok"
    assert big["status"] == "failed"
    assert big["url"] == slow
    assert big["error"]

    if sig != signal.SIGINT:
        return
    # A second run picks the .part up where the first stopped.
    fast = await run_cli_process("download", urls, "-o", out, timeout=90)
    assert fast.code == 0, fast
    last = server.requests_for("big.bin")[-1]
    assert last.headers["Range"] == f"bytes={kept}-"
    assert files_under(out) == {"small.bin", "big.bin"}


@pytest.mark.slow
async def test_a_1_gib_download_stays_well_under_100_mb(server: FileServer, tmp_path: Path) -> None:
    size = 1024 * 1024 * 1024
    served = server.add_generated("huge.bin", size)
    urls = write_list(tmp_path / "urls.txt", server.url("huge.bin"))
    report = tmp_path / "r.json"
    proc = await start_cli("download", urls, "-o", tmp_path / "out", "--report", report, "-q")
    peak = 0
    stdout = stderr = b""
    try:
        child = psutil.Process(proc.pid)
        while proc.returncode is None:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                peak = max(peak, child.memory_info().rss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 0.05)
        stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        huge = tmp_path / "out" / "huge.bin"
        size_on_disk = huge.stat().st_size if huge.exists() else -1
        for leftover in (huge, tmp_path / "out" / "huge.bin.part"):
            leftover.unlink(missing_ok=True)  # pytest keeps recent tmp folders
    assert proc.returncode == 0, stderr.decode()
    assert peak > 0
    assert peak < 100 * 1024 * 1024, f"peak RSS {peak / 2**20:.1f} MiB"
    print(f"peak RSS of the CLI child: {peak / 2**20:.1f} MiB")
    (entry,) = report_of(report)
    assert (entry["bytes"], entry["sha256"]) == (size, served.sha256)
    assert size_on_disk == size
    assert "1 ok, 0 skipped, 0 failed" in stdout.decode()
