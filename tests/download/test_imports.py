"""The downloader's module graph: no import cycles, and a cheap start-up."""

from __future__ import annotations

import ast
import platform
import subprocess
import sys
from pathlib import Path

import asyncconc.downloader
from asyncconc.testing import FileServer

PACKAGE = Path(asyncconc.downloader.__file__).parent
PREFIX = "asyncconc.downloader."


def _imports(path: Path) -> set[str]:
    """Downloader modules that ``path`` imports anywhere (top level or in a function)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found.update(n.removeprefix(PREFIX) for n in names if n.startswith(PREFIX))
    return found


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter (what it imports is its own)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )


def _empty_list(folder: Path) -> Path:
    empty = folder / "empty.txt"
    empty.write_text("")
    return empty


def test_downloader_modules_import_each_other_without_a_cycle() -> None:
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("_*.py")}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join([*trail, module])
        state[module] = "open"
        for other in sorted(graph.get(module, ())):
            visit(other, [*trail, module])
        state[module] = "done"

    assert "_pipeline" in graph
    assert "_sharded" in graph
    for module in sorted(graph):
        visit(module, [])


def test_download_of_an_empty_list_loads_neither_aiohttp_nor_asyncio(tmp_path: Path) -> None:
    # aiohttp's import is ~0.1 s of the start-up and asyncio's ~0.05 s; a run
    # with nothing to fetch must pay neither, nor build the parsers of the
    # other commands (issue target: <= 0.15 s for an empty list).
    empty = _empty_list(tmp_path)
    code = (
        "import sys\n"
        "from asyncconc.cli import main\n"
        f"rc = main(['download', {str(empty)!r}, '-o', {str(tmp_path / 'out')!r}, '-q'])\n"
        "heavy = ('aiohttp', 'aiohttp.client', 'multiprocessing', 'asyncconc.pool._api',\n"
        "         'asyncio', 'asyncconc.pool._cli', 'asyncconc.testing._cli', 'asyncconc._demo',\n"
        "         'ctypes')\n"
        "print(rc, sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = _python(code)
    assert out.stdout.splitlines()[-1] == "0 []", out.stdout + out.stderr
    assert f"no URLs in {empty}" in out.stdout  # issue 7: said so instead of a 0-file summary


def test_the_whole_command_line_still_knows_every_command() -> None:
    # Only the named command's parser is built; --help and a wrong command
    # name must still list them all.
    code = (
        "import contextlib, io\n"
        "from asyncconc.cli import main\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        "    rc = main(['nosuch'])\n"
        "print(rc, err.getvalue())\n"
    )
    out = _python(code)
    assert out.stdout.startswith("2 "), out.stdout + out.stderr
    for command in ("download", "serve", "demo", "sum"):
        assert repr(command) in out.stdout


def test_only_the_command_line_tunes_the_allocator(tmp_path: Path) -> None:
    # mallopt is process-wide: an embedding service's download() must leave
    # the host's allocator alone, while the CLI (its own process) fixes the
    # thresholds that made large bodies fault in fresh pages per batch.
    code = (
        "import asyncio, sys\n"
        "import asyncconc\n"
        "from asyncconc import _malloc\n"
        f"asyncio.run(asyncconc.download([], {str(tmp_path / 'lib')!r}))\n"
        "library = _malloc._tuned\n"
        "from asyncconc.downloader._cli import run_download\n"
        f"run_download([], __import__('pathlib').Path({str(tmp_path)!r}), quiet=True)\n"
        "print(library, _malloc._tuned)\n"
    )
    out = _python(code)
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    expected = "False True" if glibc else "False False"
    assert out.stdout.splitlines()[-1] == expected, out.stdout + out.stderr


def _cli_modules(urls: list[str], folder: Path, *options: str) -> list[str]:
    """Run ``download`` in a fresh interpreter; the aiohttp modules it loaded."""
    listing = folder / "urls.txt"
    listing.write_text("".join(url + "\n" for url in urls))
    out = str(folder / "out")
    code = (
        "import sys\n"
        "from asyncconc.cli import main\n"
        f"args = ['download', {str(listing)!r}, '-o', {out!r}, '-q', *{options!r}]\n"
        "rc = main(args)\n"
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp')[:3])\n"
    )
    return _python(code).stdout.splitlines()[-1].split(" ", 1)


def test_a_run_of_plain_http_urls_never_imports_aiohttp(
    threaded_server: FileServer, tmp_path: Path
) -> None:
    # aiohttp's import is 0.3 s of start-up here; plain http:// goes over
    # asyncconc's own connections (downloader/_http1.py) and skips it, --split
    # segments included.
    threaded_server.add_generated("a.bin", 300_000)
    threaded_server.add_generated("big.bin", 5 << 20)
    threaded_server.add_bytes("b.txt", b"b")
    urls = [threaded_server.url(name) for name in ("a.bin", "b.txt", "big.bin")]
    assert _cli_modules(urls, tmp_path, "--split", "2") == ["0", "[]"]
    assert (tmp_path / "out" / "b.txt").read_bytes() == b"b"
    assert (tmp_path / "out" / "big.bin").stat().st_size == 5 << 20


def test_an_https_url_does_import_aiohttp(threaded_server: FileServer, tmp_path: Path) -> None:
    # The counterpart: https goes through aiohttp, made on first use (here
    # to a port nothing listens on: the run fails that line and goes on).
    threaded_server.add_bytes("b.txt", b"b")
    urls = [threaded_server.url("b.txt"), "https://127.0.0.1:9/x"]
    rc, loaded = _cli_modules(urls, tmp_path, "--retries", "0")
    assert rc == "1"
    assert loaded != "[]"
    assert (tmp_path / "out" / "b.txt").read_bytes() == b"b"
