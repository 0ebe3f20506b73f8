"""Issue 7 item 6: resource limits are back-pressure, not failures.

Each case runs the downloader in a child process whose open-file limit is
lowered with :func:`resource.setrlimit` (the test process keeps its own), or
writing into a small tmpfs mounted for the test (root only; skipped with the
reason otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncconc.testing import FileServer
from tests.conftest import CliRun, files_under

FILES = 80


async def run_python(code: str, *args: str, timeout: float = 120) -> CliRun:
    """``python -c CODE ARGS`` to completion."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(code),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return CliRun(proc.returncode, out.decode(), err.decode())


# The CLI under a lowered RLIMIT_NOFILE: argv = soft hard CLI-ARGS...
CLI_WITH_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
from asyncconc.cli import main
sys.exit(main(sys.argv[3:]))
"""


def write_urls(server: FileServer, path: Path, count: int, size: int = 20_000) -> Path:
    lines = []
    for i in range(count):
        server.add_generated(f"f{i:03d}.bin", size)
        lines.append(server.url(f"f{i:03d}.bin"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def report_of(path: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(path.read_text("utf-8"))
    return data


@pytest.mark.slow
async def test_j_1000_under_a_low_open_file_limit_fails_nothing_and_says_so_once(
    server: FileServer, tmp_path: Path
) -> None:
    urls = write_urls(server, tmp_path / "urls.txt", FILES)
    out, report = tmp_path / "out", tmp_path / "r.json"
    run = await run_python(
        CLI_WITH_LIMIT, "160", "160", "download", str(urls), "-o", str(out), "-j", "1000",
        "-q", "--report", str(report),
    )  # fmt: skip
    assert run.code == 0, run
    assert "Too many open files" not in run.out + run.err
    notes = [line for line in run.err.splitlines() if line.strip()]
    assert len(notes) == 1, run.err
    assert notes[0].startswith("note: -j 1000 lowered to "), notes
    assert "open-file limit is 160" in notes[0]
    assert Counter(e["status"] for e in report_of(report)) == {"ok": FILES}
    assert len(files_under(out)) == FILES  # and no .part


async def test_the_soft_limit_is_raised_to_the_hard_one_first(
    server: FileServer, tmp_path: Path
) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-file limit here is {hard}")
    urls = write_urls(server, tmp_path / "urls.txt", 50)
    out = tmp_path / "out"
    # A soft limit of 100 would allow a dozen downloads at once; -j 500 is
    # only honoured if the limit was raised to the hard one.
    run = await run_python(
        CLI_WITH_LIMIT, "100", "4096", "download", str(urls), "-o", str(out), "-j", "500", "-q"
    )
    assert run.code == 0, run
    assert "lowered" not in run.err, run.err
    assert len(files_under(out)) == 50


# A Downloader run during which the process runs out of descriptors: once the
# first bytes arrive, every free descriptor is taken for a moment.
EMFILE_MID_RUN = """
import asyncio, os, resource, sys, json
from asyncconc import Downloader, DownloadProgress

urls, dest = json.loads(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
hogged = []
first = asyncio.Event()

def on_event(event):
    if isinstance(event, DownloadProgress):
        first.set()

async def hog():
    await first.wait()
    try:
        while True:
            hogged.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == 24, exc
    print("hogged", len(hogged), flush=True)
    await asyncio.sleep(0.5)  # the fault's duration, not a synchronisation
    for fd in hogged:
        os.close(fd)

async def main():
    async with Downloader(dest, concurrency=40, on_event=on_event, backoff=0.01) as dl:
        hogger = asyncio.create_task(hog())
        results = await dl.download(urls)
        await hogger
    print(json.dumps([r.as_dict() for r in results]))

asyncio.run(main())
"""


async def test_running_out_of_descriptors_mid_run_only_slows_the_run(
    server: FileServer, tmp_path: Path
) -> None:
    names = [f"e{i:03d}.bin" for i in range(60)]
    for name in names:
        server.add_generated(name, 300_000)
    urls = [server.url(name, drip=0.01, drip_size=65536) for name in names]
    out = tmp_path / "out"
    run = await run_python(EMFILE_MID_RUN, json.dumps(urls), str(out))
    assert run.code == 0, run
    first, last = run.out.splitlines()[0], run.out.splitlines()[-1]
    assert first.startswith("hogged ")
    results = json.loads(last)
    assert [r["status"] for r in results] == ["ok"] * len(names), [
        r["error"] for r in results if r["error"]
    ]
    assert files_under(out) == set(names)


# -- a full disk ------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.mark.slow
async def test_a_full_disk_stops_new_downloads_and_a_rerun_resumes_everything(
    server: FileServer, tmp_path: Path
) -> None:
    count = 20
    urls = write_urls(server, tmp_path / "urls.txt", count, size=200_000)
    report = tmp_path / "r.json"
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "out"
        run = await run_python(
            CLI_WITH_LIMIT, "1024", "1024", "download", str(urls), "-o", str(out), "-j", "2",
            "-q", "--report", str(report),
        )  # fmt: skip
        assert run.code == 1, run
        entries = report_of(report)
        assert len(entries) == count
        status = Counter(e["status"] for e in entries)
        full = [e for e in entries if (e["error"] or "").startswith("no space left on device")]
        not_started = [e for e in entries if e["error"] == "not started (no space left on device)"]
        assert status["ok"] >= 1
        # Only what was in flight when the disk filled hit ENOSPC (-j 2)...
        assert 1 <= len(full) <= 2, entries
        # ... the rest was never started, and nothing else failed.
        assert status["ok"] + len(full) + len(not_started) == count
        assert len(not_started) >= count - 8
        for entry in full:
            assert entry["part"] == entry["path"] + ".part"
            assert (out / entry["part"]).exists()
        for entry in not_started:
            assert not (out / f"{Path(entry['url']).name}.part").exists()
        kept = {e["path"]: (out / e["part"]).stat().st_size for e in full}
        requests_before = len(server.requests)

        # Free space (a bigger disk), rerun: everything is resumed or fetched.
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True, timeout=30)
        again = await run_python(
            CLI_WITH_LIMIT, "1024", "1024", "download", str(urls), "-o", str(out), "-q"
        )
        assert again.code == 0, again
        assert files_under(out) == {f"f{i:03d}.bin" for i in range(count)}
        ranges = {
            r.path.lstrip("/"): r.headers.get("Range") for r in server.requests[requests_before:]
        }
        for path, size in kept.items():
            if size > 0:  # what reached the disk before it filled is not fetched again
                assert ranges[path] == f"bytes={size}-", (path, ranges)
