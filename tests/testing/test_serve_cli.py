"""``python -m asyncconc serve DIR``: a folder over HTTP, with Range."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp

from asyncconc.cli import main


async def test_serve_a_folder_with_range(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(bytes(range(256)) * 4)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncconc",
        "serve",
        str(tmp_path),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        base = line.split(" at ")[1].split()[0].rstrip("/")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/sub/data.bin", headers={"Range": "bytes=1000-"}) as r:
                assert r.status == 206
                assert await r.read() == (bytes(range(256)) * 4)[1000:]
            async with session.get(f"{base}/../etc/passwd") as r:
                assert r.status == 404
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 130


def test_serve_missing_folder_is_a_usage_error(tmp_path: Path, capsys: object) -> None:
    assert main(["serve", str(tmp_path / "nope")]) == 2


def test_serve_bad_port_is_a_usage_error() -> None:
    assert main(["serve", ".", "--port", "70000"]) == 2


async def _serve(tmp_path: Path, *options: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncconc",
        "serve",
        str(tmp_path),
        *options,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    return proc, line.split(" at ")[1].split()[0].rstrip("/")


async def test_serve_faults_and_listing_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"a" * 10)
    for options, fault_status, index_status in (((), 200, 404), (("--faults", "--list"), 503, 200)):
        proc, base = await _serve(tmp_path, *options)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/a.bin?status=503") as r:
                    assert r.status == fault_status, options
                async with session.get(f"{base}/") as r:
                    assert r.status == index_status, options
        finally:
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), 10) == 130
