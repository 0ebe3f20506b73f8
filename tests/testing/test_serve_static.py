"""Files on disk (``_static``): no way out of DIR, and HTTP by aiohttp's book."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asyncconc.testing import serve_files

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


async def test_swapping_a_folder_for_a_symlink_never_serves_outside(tmp_path: Path) -> None:
    renameat2 = _renameat2()
    if renameat2 is None:
        pytest.skip("libc has no renameat2")
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "inner").mkdir(parents=True)
    outside.mkdir()
    (root / "inner" / "f.txt").write_bytes(b"inside\n" * 100)
    (outside / "f.txt").write_bytes(b"OUTSIDE\n" * 100)
    (root / "link").symlink_to(outside, target_is_directory=True)
    a, b = bytes(root / "inner"), bytes(root / "link")
    if renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) != 0:
        pytest.skip(f"renameat2(RENAME_EXCHANGE) unsupported here: errno {ctypes.get_errno()}")
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE)
            swaps += 1

    thread = threading.Thread(target=swap, daemon=True)
    statuses: dict[int, int] = {}
    leaked = 0
    async with serve_files(root, faults=False) as server, aiohttp.ClientSession() as session:
        thread.start()
        try:
            deadline = time.monotonic() + 4
            for _ in range(400):
                if time.monotonic() > deadline:
                    break
                for name in ("inner/f.txt", "link/f.txt"):
                    async with session.get(server.url(name)) as r:
                        body = await r.read()
                        statuses[r.status] = statuses.get(r.status, 0) + 1
                        leaked += b"OUTSIDE" in body
        finally:
            stop.set()
            thread.join(5)
    assert swaps > 100
    assert statuses.get(200, 0) > 0  # the race was really run while serving
    assert leaked == 0, f"{leaked} responses carried bytes from outside DIR ({statuses})"


async def test_symlinks_out_and_loops_are_404_and_bad_paths_400(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "k.bin").write_bytes(b"k" * 64)
    (tmp_path / "out").symlink_to("/etc/passwd")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    async with serve_files(tmp_path, faults=False) as server, aiohttp.ClientSession() as session:
        base = server.base_url
        for path, status in [
            ("/out", 404),
            ("/loop", 404),
            ("/loop/x", 404),
            ("/k.bin%00", 400),
            ("/" + "a" * 300, 400),
            ("/k.bin", 200),
        ]:
            async with session.get(base + path) as r:
                assert r.status == status, path
    assert "Traceback" not in caplog.text
    warned = [r.getMessage() for r in caplog.records if r.name == "asyncconc.serve"]
    assert len(warned) == 2, warned  # one line per malformed path


async def test_http_rules(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    data = bytes(range(256)) * 4
    (tmp_path / "d.txt").write_bytes(data)
    async with serve_files(tmp_path, faults=False) as server, aiohttp.ClientSession() as session:
        async with session.get(server.url("empty"), headers={"Range": "bytes=-5"}) as r:
            assert r.status == 416
        async with session.get(server.url("d.txt")) as r:
            assert r.status == 200
            assert r.content_type == "text/plain"
            etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
        async with session.get(server.url("d.txt"), headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with session.get(server.url("d.txt"), headers={"If-Modified-Since": modified}) as r:
            assert r.status == 304
        ranged = {"Range": "bytes=10-19"}
        async with session.get(server.url("d.txt"), headers={**ranged, "If-Range": etag}) as r:
            assert r.status == 206
            assert await r.read() == data[10:20]
        stale = {**ranged, "If-Range": '"stale-1"'}
        async with session.get(server.url("d.txt"), headers=stale) as r:
            assert r.status == 200
            assert await r.read() == data
        for spec, status in (("BYTES=0-5", 206), ("bytes=1_0-2_0", 416), ("bytes=+5-+9", 416)):
            async with session.get(server.url("d.txt"), headers={"Range": spec}) as r:
                assert r.status == status, spec
                if status == 206:
                    assert await r.read() == data[:6]
        for method in ("POST", "PUT", "DELETE", "TRACE"):
            async with session.request(method, server.url("d.txt")) as r:
                assert r.status == 405
                assert r.headers["Allow"] == "GET, HEAD"


async def test_relative_dir_is_resolved_once_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_bytes(b"a")
    monkeypatch.chdir(tmp_path)
    async with serve_files("site", faults=False) as server, aiohttp.ClientSession() as session:
        os.chdir("/")
        async with session.get(server.url("a.txt")) as r:
            assert r.status == 200
            assert await r.read() == b"a"


async def test_fault_parameters_only_with_faults(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    for faults, status in ((False, 200), (True, 503)):
        async with serve_files(tmp_path, faults=faults) as server:
            url = server.base_url + "/a.bin?status=503"
            async with aiohttp.ClientSession() as session, session.get(url) as r:
                assert r.status == status
                if not faults:
                    assert await r.read() == b"x" * 100


async def test_listing_is_off_by_default_and_escapes_names(tmp_path: Path) -> None:
    (tmp_path / "<script>x.txt").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    async with serve_files(tmp_path, faults=False) as server:
        url = server.base_url + "/"
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            assert r.status == 404
    async with (
        serve_files(tmp_path, faults=False, listing=True) as server,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(server.base_url + "/") as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            page = await r.text()
        assert "<script>" not in page
        assert "&lt;script&gt;x.txt" in page
        assert 'href="sub/"' in page
        async with session.get(server.base_url + "/sub", allow_redirects=False) as r:
            assert r.status == 301
            assert r.headers["Location"] == "/sub/"
