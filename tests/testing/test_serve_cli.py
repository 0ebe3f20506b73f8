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
            # Fault routes are off without --faults: the query string is ignored.
            async with session.get(f"{base}/sub/data.bin?status=503&location=http://e.x/") as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 130


def test_serve_missing_folder_is_a_usage_error(tmp_path: Path, capsys: object) -> None:
    assert main(["serve", str(tmp_path / "nope")]) == 2


def test_serve_bad_port_is_a_usage_error() -> None:
    assert main(["serve", ".", "--port", "70000"]) == 2


async def test_serve_with_faults_turns_the_fault_routes_on(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncconc", "serve", str(tmp_path), "--port", "0", "--faults",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        base = line.split(" at ")[1].split()[0].rstrip("/")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/a.bin?status=503") as r:
                assert r.status == 503
            async with session.get(f"{base}/a.bin?status=101") as r:
                assert r.status == 400
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 130


async def test_a_refused_request_is_one_log_line(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncconc", "serve", str(tmp_path), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        port = int(line.split(" at ")[1].split(":")[2].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        await writer.drain()
        assert b" 400 " in (await asyncio.wait_for(reader.read(), 30)).split(b"\r\n")[0]
        writer.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 130
    assert proc.stderr is not None
    logged = (await proc.stderr.read()).decode().splitlines()
    refused = [text for text in logged if "Error handling request" in text]
    assert len(refused) == 1
    assert "Traceback" not in "\n".join(logged)
