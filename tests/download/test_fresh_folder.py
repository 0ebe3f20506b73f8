"""New names in the output folder are not looked up one by one.

A run lists ``dest`` once (``FetchContext.absent_at_start``); a name that
was not there then has no ``NAME.part`` or ``NAME.part.meta`` to find before
its first request, and no ``NAME`` until its own download renames the
``.part`` (the name is claimed), so those failing system calls per file are
skipped. Names that were there (case-folded) are looked up as before: these
tests pin both sides, with a spy on the real ``os`` calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from asyncconc import DownloadRequest, download
from asyncconc.testing import FileServer, pattern_bytes
from tests.conftest import files_under, serve_handler

FAST: dict[str, Any] = {"backoff": 0.01, "backoff_max": 0.05}


class Lookups:
    """Paths under ``dest`` given to ``os.lstat`` and ``os.unlink`` (the real ones run)."""

    def __init__(self, dest: Path) -> None:
        self.dest = os.fspath(dest)
        self.paths: list[tuple[str, str]] = []

    def wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
            text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
            if text.startswith(self.dest + os.sep):
                self.paths.append((name, os.path.relpath(text, self.dest)))
            return real(path, *args, **kwargs)

        return spy

    def names(self) -> set[str]:
        return {rel for _, rel in self.paths}

    def count(self, call: str, rel: str) -> int:
        return self.paths.count((call, rel))


@pytest.fixture
def lookups(dest: Path, monkeypatch: pytest.MonkeyPatch) -> Lookups:
    spy = Lookups(dest)
    monkeypatch.setattr(os, "lstat", spy.wrap("lstat", os.lstat))
    monkeypatch.setattr(os, "unlink", spy.wrap("unlink", os.unlink))
    return spy


async def test_new_names_in_an_empty_folder_are_not_looked_up(
    server: FileServer, dest: Path, lookups: Lookups
) -> None:
    served = [server.add_generated(f"f{i}.bin", 20_000 + i) for i in range(30)]
    results = await download([server.url(s.name) for s in served], dest, **FAST)
    assert [r.status for r in results] == ["ok"] * 30
    assert files_under(dest) == {s.name for s in served}
    for s in served:
        assert (dest / s.name).stat().st_size == s.size
    # No lstat of NAME or NAME.part, no unlink of a sidecar that cannot be
    # there: none of them existed, and only this download makes them.
    looked = lookups.names()
    for s in served:
        assert s.name not in looked
        assert s.name + ".part" not in looked
        assert s.name + ".part.meta" not in looked


async def test_names_given_by_the_list_are_not_looked_up_either(
    server: FileServer, dest: Path, lookups: Lookups
) -> None:
    # "URL NAME" lines: the name is fixed before the request, which used to
    # cost an lstat of NAME before it and another at the attempt.
    served = [server.add_generated(f"f{i}.bin", 1_000 + i) for i in range(10)]
    requests = [DownloadRequest.from_url(server.url(s.name), f"saved-{s.name}") for s in served]
    results = await download(requests, dest, **FAST)
    assert [r.status for r in results] == ["ok"] * 10
    assert files_under(dest) == {f"saved-{s.name}" for s in served}
    looked = lookups.names()
    for s in served:
        assert f"saved-{s.name}" not in looked
        assert f"saved-{s.name}.part" not in looked


async def test_a_listed_name_present_at_the_start_is_skipped(
    server: FileServer, dest: Path, lookups: Lookups
) -> None:
    # The other side: a name the folder held is looked up, and skipped.
    server.add_bytes("f.bin", b"new" * 1000)
    dest.mkdir()
    (dest / "saved.bin").write_bytes(b"kept")
    (result,) = await download([DownloadRequest.from_url(server.url("f.bin"), "saved.bin")], dest)
    assert result.status == "skipped"
    assert (dest / "saved.bin").read_bytes() == b"kept"
    assert server.requests_for("f.bin") == []
    assert lookups.count("lstat", "saved.bin") >= 1


async def test_a_name_present_at_the_start_is_looked_up(
    server: FileServer, dest: Path, lookups: Lookups
) -> None:
    # F.BIN is there: on a case-insensitive file system it *is* f.bin, so
    # f.bin is looked up (and on this one found absent: downloaded as usual).
    server.add_bytes("f.bin", b"new" * 1000)
    server.add_bytes("g.bin", b"g" * 1000)
    dest.mkdir()
    (dest / "F.BIN").write_bytes(b"other file")
    results = await download([server.url("f.bin"), server.url("g.bin")], dest, **FAST)
    assert [r.status for r in results] == ["ok", "ok"]
    # f.bin before the request and after the head; g.bin not at all.
    assert lookups.count("lstat", "f.bin") == 2
    assert lookups.count("lstat", "g.bin") == 0
    assert (dest / "F.BIN").read_bytes() == b"other file"


async def test_a_stale_sidecar_alone_is_removed_by_a_whole_download(
    server: FileServer, dest: Path, lookups: Lookups
) -> None:
    # A sidecar with no .part (a crash between the rename and its removal):
    # the new file arrives whole and must not leave it describing nothing.
    server.add_bytes("f.bin", pattern_bytes(5000, seed=1))
    dest.mkdir()
    (dest / "f.bin.part.meta").write_text('{"url": "http://elsewhere/f.bin", "etag": "x"}')
    (result,) = await download([server.url("f.bin")], dest, **FAST)
    assert result.status == "ok", result.error
    assert files_under(dest) == {"f.bin"}
    assert ("unlink", "f.bin.part.meta") in lookups.paths


async def test_a_part_present_at_the_start_is_resumed(server: FileServer, dest: Path) -> None:
    data = pattern_bytes(200_000, seed=2)
    server.add_bytes("f.bin", data)
    for i in range(5):
        server.add_bytes(f"n{i}.bin", b"n" * 100)
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(data[:70_000])
    urls = [server.url(f"n{i}.bin") for i in range(5)] + [server.url("f.bin")]
    results = await download(urls, dest, **FAST)
    assert [r.status for r in results] == ["ok"] * 6
    (request,) = server.requests_for("f.bin")
    assert request.headers["Range"] == "bytes=70000-"
    assert (dest / "f.bin").read_bytes() == data


async def test_a_file_in_a_sub_folder_is_looked_up(
    server: FileServer, dest: Path, lookups: Lookups
) -> None:
    # Only dest itself is listed: a name in a sub-folder is looked up.
    server.add_bytes("f.bin", b"f" * 3000)
    request = DownloadRequest.from_line(f"{server.url('f.bin')} sub/f.bin", 1)
    assert request is not None
    (result,) = await download([request], dest, **FAST)
    assert result.status == "ok", result.error
    assert (dest / "sub" / "f.bin").read_bytes() == b"f" * 3000
    assert os.path.join("sub", "f.bin.part") in lookups.names()


@pytest.mark.parametrize("split", [1, 4])
async def test_a_part_made_by_another_program_during_the_run_is_left_alone(
    dest: Path, tmp_path: Path, split: int
) -> None:
    # The folder is listed before the first request; while the first file is
    # served, "another program" starts g.bin.part. The run must not replace
    # or resume it (it may be mid-write): g.bin fails, naming the file. With
    # split=4 the segmented fresh start refuses it too, before writing a
    # sidecar that would describe someone else's bytes.
    theirs = b"someone else's bytes"
    big = tmp_path / "big.bin"
    big.write_bytes(pattern_bytes(3 << 20, seed=5))

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/f.bin":
            (dest / "g.bin.part").write_bytes(theirs)
            return web.Response(body=b"f" * 100)
        return web.FileResponse(big)  # answers Range requests

    async with serve_handler(handle) as base:
        results = await download(
            [f"{base}/f.bin", f"{base}/g.bin"], dest, concurrency=1, split=split, **FAST
        )
    assert [r.status for r in results] == ["ok", "failed"]
    assert "another program" in (results[1].error or "")
    assert (dest / "g.bin.part").read_bytes() == theirs
    assert files_under(dest) == {"f.bin", "g.bin.part"}


async def test_a_name_made_by_another_program_during_the_run_is_replaced(
    dest: Path,
) -> None:
    # The README's promise: "existing" is what the run's listing saw, so a
    # g.bin that appears while f.bin is served is not taken for g.bin's
    # download (nor skipped): the download replaces it whole.
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/f.bin":
            (dest / "g.bin").write_bytes(b"someone else's bytes")
            return web.Response(body=b"f" * 100)
        return web.Response(body=pattern_bytes(5000, seed=7))

    async with serve_handler(handle) as base:
        results = await download([f"{base}/f.bin", f"{base}/g.bin"], dest, concurrency=1, **FAST)
    assert [r.status for r in results] == ["ok", "ok"]
    assert (dest / "g.bin").read_bytes() == pattern_bytes(5000, seed=7)
    assert files_under(dest) == {"f.bin", "g.bin"}
