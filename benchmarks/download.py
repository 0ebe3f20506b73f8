"""Download benchmark: asyncconc side by side with aria2c, curl, wget2 and threads.

Usage (from the repository root)::

    python benchmarks/download.py                      # all sets, full sizes, 3 repeats
    python benchmarks/download.py --quick --repeat 1   # smoke run, seconds
    python benchmarks/download.py --sets small --tools asyncconc,curl --repeat 5

Three data sets, generated deterministically (seeded) in ``--workdir`` and
served over loopback:

=========  ===================  ==============================================
small      2000 x 16 KiB        files/s: per-request and per-file overhead
large      4 x 256 MiB          MB/s: the byte path (read, hash, write)
latency    400 x 64 KiB         every response delayed 100 ms; at -j 16 the
                                ideal wall time is 400 / 16 * 0.1 s = 2.5 s
=========  ===================  ==============================================

Servers. ``small`` and ``large`` are served by nginx when it is installed
(``apt-get install nginx``; ``--install-missing`` does it): one worker,
``sendfile on``, ``access_log off``, keep-alive without a request cap, a
config written into the workdir, a free port on 127.0.0.1. nginx cannot wait
before answering without third-party modules (``echo_sleep`` is in the echo
module; ``limit_rate``/``limit_req`` throttle bytes or request *rates*, not
a fixed per-request delay), so the ``latency`` set is served by
``asyncconc.testing.serve_files(root, delay=0.1)`` in a subprocess (uvloop
when installed): 160 responses/s of 64 KiB is far below what it can do, so
the delay, not the server, sets the pace. Without nginx every set falls back
to that aiohttp server; the output always names the server used.

Measurements. Each tool runs as a subprocess under GNU ``/usr/bin/time``:
wall time is measured here around the whole run (start-up included); CPU
seconds are user + sys of the tool and the children it waited for; peak
memory is the tool's max RSS (every tool here is a single process, threads
included). ``/usr/bin/time`` is used rather than ``wait4`` from this
process because Linux folds the *parent's* peak RSS into a child's
``ru_maxrss`` at ``exec`` (``exec_mmap``), which would inflate every number
by this harness's own size. Every file is verified (size and sha256) after
each run, then ``sync`` is called, so one tool's write-back does not land in
the next one's run, and the output is deleted. On an ext4 without a journal
(where creating files just after thousands were deleted is several times
slower: see ``skips_recent_inodes``) a set of 100 files or more instead
moves each run's output aside and deletes all of them after the set, and
after thousands the next set starts only once those deletions are 36 s old.

Noise. The machine is shared; absolute numbers swing between runs, so tools
are run in a rotating order in every repeat, the reported run per tool is
the median (``--pick best`` for the fastest) and the min-max wall spread is
printed. Ratios between tools in the same invocation are what to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KIB = 1024
MIB = 1024 * KIB
MB = 1_000_000
GEN_BLOCK = 4 * MIB
REPO = Path(__file__).resolve().parent.parent
DEFAULT_TOOLS = (
    "asyncconc",
    "asyncconc-w2",
    "asyncconc-split4",
    "asyncconc-split4-w2",
    "floor",
    "aria2c",
    "aria2c-x4",
    "curl",
    "wget2",
    "wget2-chunk",
    "threads",
)
ALL_SETS = ("small", "many", "large", "one", "latency")


# -- data sets -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetSpec:
    """One data set: ``count`` files of ``size`` bytes, served after ``delay`` s."""

    name: str
    count: int
    size: int
    delay: float = 0.0
    timeout: float = 300.0

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    def ideal_seconds(self, jobs: int) -> float | None:
        """The wall time a perfect client needs, when the delay dominates."""
        if not self.delay:
            return None
        return -(-self.count // jobs) * self.delay

    def describe(self) -> str:
        size = f"{self.size // MIB} MiB" if self.size >= MIB else f"{self.size // KIB} KiB"
        extra = f", {self.delay * 1000:.0f} ms server delay" if self.delay else ""
        return f"{self.count} x {size} = {self.total_bytes / MIB:.1f} MiB{extra}"


FULL_SETS = {
    "small": SetSpec("small", 2000, 16 * KIB, timeout=180),
    "many": SetSpec("many", 20000, 16 * KIB, timeout=300),
    "large": SetSpec("large", 4, 256 * MIB, timeout=300),
    "one": SetSpec("one", 1, 1024 * MIB, timeout=300),
    "latency": SetSpec("latency", 400, 64 * KIB, delay=0.1, timeout=120),
}
QUICK_SETS = {
    "small": SetSpec("small", 200, 16 * KIB, timeout=60),
    "many": SetSpec("many", 1000, 16 * KIB, timeout=60),
    "large": SetSpec("large", 2, 32 * MIB, timeout=60),
    "one": SetSpec("one", 1, 64 * MIB, timeout=60),
    "latency": SetSpec("latency", 64, 64 * KIB, delay=0.1, timeout=60),
}


@dataclass(frozen=True, slots=True)
class FileSpec:
    name: str
    size: int
    sha256: str


def _file_name(spec: SetSpec, index: int) -> str:
    width = len(str(spec.count - 1))
    return f"{spec.name[0]}{index:0{width}d}.bin"


def _generate_file(path: Path, size: int, seed: str) -> str:
    """Write ``size`` seeded pseudo-random bytes to ``path``; return the sha256.

    Written in 4 MiB blocks so a 256 MiB file never sits in memory.
    """
    rng = random.Random(seed)
    digest = hashlib.sha256()
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        left = size
        while left > 0:
            block = rng.randbytes(min(GEN_BLOCK, left))
            digest.update(block)
            fh.write(block)
            left -= len(block)
    tmp.replace(path)
    return digest.hexdigest()


def prepare_set(spec: SetSpec, data_root: Path) -> list[FileSpec]:
    """Generate (or reuse) the files of ``spec`` under ``data_root/spec.name``.

    A ``manifest.json`` records every name, size and sha256; files are reused
    when the manifest matches the spec and every file has its size.
    """
    folder = data_root / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    key = {"count": spec.count, "size": spec.size, "generator": "random.Random(set-index)"}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        saved = json.loads(manifest.read_text())
        if saved["key"] == key:
            files = [FileSpec(**f) for f in saved["files"]]
            if all(_size_or_none(folder / f.name) == f.size for f in files):
                return files
    files = []
    for index in range(spec.count):
        name = _file_name(spec, index)
        digest = _generate_file(folder / name, spec.size, f"{spec.name}-{index}")
        files.append(FileSpec(name, spec.size, digest))
    manifest.write_text(json.dumps({"key": key, "files": [dataclasses.asdict(f) for f in files]}))
    return files


def warm(folder: Path, files: list[FileSpec]) -> float:
    """Read every file of a set once so the server serves it from the page cache.

    Without this the first tool of a set paid for the disk (measured: a
    1 GiB run took 4.2-6.3 s first in its set, 1.5 s afterwards). Seconds taken.
    """
    start = time.monotonic()
    for spec in files:
        with (folder / spec.name).open("rb") as fh:
            while fh.read(GEN_BLOCK):
                pass
    return time.monotonic() - start


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# -- servers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    base_url: str
    description: str
    pid: int | None = None  # the server's (master) process

    def cpu_seconds(self) -> float:
        """CPU (user + sys) used so far by the server and its live child processes."""
        return tree_cpu_seconds(self.pid) if self.pid is not None else 0.0


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants, from ``/proc`` (Linux).

    A benchmark client's figures leave out the server's work; on a machine
    whose cores the server shares with the client, that work is part of
    every run's budget (``srv CPU`` in the tables).
    """
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue  # gone meanwhile
        # After "pid (comm)": state, ppid, ..., utime (14th field), stime.
        parent[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        current = frontier.pop()
        for child, ppid in parent.items():
            if ppid == current and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(used.get(each, 0.0) for each in tree)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 10.0
    for _ in range(200):  # bounded: 200 x 50 ms
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within 10 s: {_tail(log)}")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


NGINX_CONF = """\
{user}worker_processes {workers};
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {work}/nginx-tmp/body;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def nginx_version(nginx: str) -> str:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stderr or out.stdout).strip().rpartition("/")[2] or "?"


@contextlib.contextmanager
def run_nginx(nginx: str, root: Path, work: Path, workers: int) -> Iterator[Server]:
    """nginx serving ``root`` on a free loopback port, stopped on exit."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "nginx-tmp").mkdir(exist_ok=True)
    log = work / "nginx-error.log"
    for _attempt in range(3):  # the free port may be taken before nginx binds it
        port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                user="user root;\n" if os.geteuid() == 0 else "",
                workers=workers,
                work=work,
                port=port,
                root=root,
            )
        )
        cmd = [nginx, "-p", str(work), "-e", str(log), "-c", str(conf)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            _wait_listening(port, proc, "nginx", log)
        except RuntimeError:
            _stop(proc, signal.SIGQUIT)
            if _attempt == 2:
                raise
            continue
        try:
            desc = (
                f"nginx {nginx_version(nginx)} ({workers} worker{'s' if workers > 1 else ''}, "
                "sendfile on, access_log off)"
            )
            yield Server(f"http://127.0.0.1:{port}", desc, proc.pid)
        finally:
            _stop(proc, signal.SIGQUIT)  # graceful: finish, then exit
        return


@contextlib.contextmanager
def run_python_server(
    python: str, root: Path, work: Path, delay: float, kind: str = "aiohttp"
) -> Iterator[Server]:
    """A Python server for ``root`` in a subprocess.

    ``kind="aiohttp"``: :func:`asyncconc.testing.serve_files` (full HTTP,
    Range, ...). ``kind="lean"``: :func:`lean_main`, a minimal keep-alive
    GET server with the files in memory, for the latency set: serve_files
    spends ~0.6 ms of Python per request, and 16 responses falling due at
    the same moment queue behind each other, adding ~10 ms to each of the
    25 rounds (curl measured 2.73-2.83 s against the 2.5 s ideal).
    """
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"pyserver-{kind}-{delay:g}.log"
    command = "_serve" if kind == "aiohttp" else "_serve_lean"
    for _attempt in range(3):
        port = free_port()
        cmd = [python, __file__, command, str(root), "--port", str(port), "--delay", str(delay)]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            _wait_listening(port, proc, f"the {kind} server", log)
        except RuntimeError:
            _stop(proc)
            if _attempt == 2:
                raise
            continue
        try:
            loop = "uvloop" if _has_module(python, "uvloop") else "asyncio"
            if kind == "aiohttp":
                desc = f"aiohttp (asyncconc.testing.serve_files, delay={delay:g} s, {loop})"
            else:
                desc = f"lean asyncio delay server (files in memory, delay={delay:g} s, {loop})"
            yield Server(f"http://127.0.0.1:{port}", desc, proc.pid)
        finally:
            _stop(proc)
        return


def _has_module(python: str, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", code], timeout=30, check=False).returncode == 0


def serve_main(argv: Sequence[str]) -> int:
    """Internal: ``download.py _serve ROOT --port N --delay S`` (the aiohttp server)."""
    parser = argparse.ArgumentParser(prog="download.py _serve")
    parser.add_argument("root")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)

    import asyncio

    from asyncconc.testing import serve_files

    async def serve() -> None:
        async with serve_files(args.root, port=args.port, delay=args.delay):
            await asyncio.Event().wait()  # until SIGTERM

    try:
        import uvloop

        runner: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        runner = asyncio.new_event_loop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with asyncio.Runner(loop_factory=runner) as loop_runner:
        loop_runner.run(serve())
    return 0


def run_from_main(argv: Sequence[str]) -> int:
    """Internal: ``download.py _run_from DIR ARGS...`` runs ``python -m asyncconc ARGS``
    with the package imported from ``DIR/asyncconc`` (a patched copy, ``--variant``).

    A setuptools editable install resolves ``asyncconc`` through a meta-path
    finder that wins over ``sys.path``, so that finder is dropped here.
    """
    import runpy

    source = str(Path(argv[0]).resolve())
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, source)
    # Worker processes (--workers: the pool's fork server is a new
    # interpreter) must import the same copy; on PYTHONPATH it wins there.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [source, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    sys.argv = ["asyncconc", *argv[1:]]
    import asyncconc

    where = str(Path(asyncconc.__file__ or "?").resolve())
    if not where.startswith(source):
        print(f"error: asyncconc was imported from {where}, not {source}", file=sys.stderr)
        return 2
    runpy.run_module("asyncconc", run_name="__main__", alter_sys=True)
    return 0  # not reached: asyncconc's __main__ exits


class _LeanProtocol:
    """HTTP/1.1 GET/HEAD with keep-alive; each answer ``delay`` s after its request.

    Requests on one connection are answered in order, one delay each.
    """

    def __init__(self, files: dict[str, bytes], delay: float) -> None:
        import asyncio

        self.files = files
        self.delay = delay
        self.loop = asyncio.get_running_loop()
        self.buffer = b""
        self.queue: list[tuple[bytes, bytes, bool]] = []
        self.transport: Any = None
        self.timer: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            method, target, *_ = head.split(b"\r\n", 1)[0].split(b" ")
            close = b"connection: close" in head.lower()
            self.queue.append((method, target, close))
        if self.queue and self.timer is None:
            self.timer = self.loop.call_later(self.delay, self.answer)

    def answer(self) -> None:
        from urllib.parse import unquote

        self.timer = None
        if self.transport is None or not self.queue:
            return
        method, target, close = self.queue.pop(0)
        name = unquote(target.decode("latin-1").split("?", 1)[0].lstrip("/"))
        body = self.files.get(name)
        status = b"200 OK" if body is not None else b"404 Not Found"
        body = body if body is not None else b"not found\n"
        head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n" % (status, len(body))
        head += b"Content-Type: application/octet-stream\r\n"
        head += b"Connection: close\r\n\r\n" if close else b"\r\n"
        self.transport.writelines([head] if method == b"HEAD" else [head, body])
        if close:
            self.transport.close()
        elif self.queue:
            self.timer = self.loop.call_later(self.delay, self.answer)

    def pause_writing(self) -> None:  # the socket buffers are large enough here
        pass

    def resume_writing(self) -> None:
        pass

    def eof_received(self) -> bool:
        return False


def lean_main(argv: Sequence[str]) -> int:
    """Internal: ``download.py _serve_lean ROOT --port N --delay S``."""
    import asyncio

    parser = argparse.ArgumentParser(prog="download.py _serve_lean")
    parser.add_argument("root")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    files = {p.name: p.read_bytes() for p in Path(args.root).iterdir() if p.suffix == ".bin"}

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _LeanProtocol(files, args.delay),  # type: ignore[arg-type,return-value]
            "127.0.0.1",
            args.port,
            backlog=1024,
        )
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve())
    return 0


# -- the thread-per-download client ---------------------------------------------


def threads_main(argv: Sequence[str]) -> int:
    """Internal: ``download.py _threads URLS DIR -j N``.

    The classic approach: ThreadPoolExecutor + urllib.request.urlopen +
    shutil.copyfileobj (64 KiB reads), one connection per request (urllib
    does not keep connections alive). Exit 1 if any download failed.
    """
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    parser = argparse.ArgumentParser(prog="download.py _threads")
    parser.add_argument("urls")
    parser.add_argument("dest")
    parser.add_argument("-j", type=int, default=16)
    args = parser.parse_args(argv)
    pairs = [line.split()[:2] for line in Path(args.urls).read_text().splitlines() if line]
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)

    def one(pair: list[str]) -> bool:
        url, name = pair
        try:
            with urllib.request.urlopen(url, timeout=30) as resp, open(dest / name, "wb") as fh:
                shutil.copyfileobj(resp, fh)
        except OSError as exc:
            print(f"failed: {url}: {exc}", file=sys.stderr)
            return False
        return True

    with ThreadPoolExecutor(args.j) as pool:
        ok = all(list(pool.map(one, pairs)))
    return 0 if ok else 1


def floor_main(argv: Sequence[str]) -> int:
    """Internal: ``download.py _floor URLS DIR -j N``: the floor client.

    What any asyncio downloader must do at least, and nothing else: aiohttp
    on uvloop (one session, ``limit=N``), N tasks taking URLs in turn, every
    body chunk written with ``os.write`` to ``NAME.part``, renamed to
    ``NAME`` when its length matches. No events, names, resume, retries or
    hashing. asyncconc's per-file cost is measured against this
    (issue target: no more than 1.3x its wall time on the many-file sets).
    Exit 1 if any download failed.
    """
    import asyncio

    import aiohttp

    parser = argparse.ArgumentParser(prog="download.py _floor")
    parser.add_argument("urls")
    parser.add_argument("dest")
    parser.add_argument("-j", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    pairs = [line.split()[:2] for line in Path(args.urls).read_text().splitlines() if line]
    # floor-w2: the list dealt out over P processes that never talk to each
    # other, -j split among them; what any P-process downloader can reach at
    # best. Forked before aiohttp is imported, so each imports its own.
    children: list[int] = []
    share = 0
    for k in range(1, args.processes):
        pid = os.fork()
        if pid == 0:
            share, children = k, []
            break
        children.append(pid)
    pairs = pairs[share :: args.processes]
    args.j = max(1, -(-args.j // args.processes))
    dest = os.path.abspath(args.dest)
    os.makedirs(dest, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC

    async def one(session: aiohttp.ClientSession, url: str, name: str) -> bool:
        final = os.path.join(dest, name)
        part = final + ".part"
        async with session.get(url, auto_decompress=False) as resp:
            if resp.status != 200:
                print(f"failed: {url}: HTTP {resp.status}", file=sys.stderr)
                return False
            fd = os.open(part, flags, 0o644)
            size = 0
            try:
                async for chunk in resp.content.iter_any():
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    size += len(chunk)
            finally:
                os.close(fd)
        if resp.content_length is not None and size != resp.content_length:
            os.unlink(part)
            print(f"failed: {url}: {size} of {resp.content_length} bytes", file=sys.stderr)
            return False
        os.rename(part, final)
        return True

    async def main() -> bool:
        work = iter(pairs)
        ok = True
        connector = aiohttp.TCPConnector(limit=args.j)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal ok
                for url, name in work:
                    try:
                        ok = await one(session, url, name) and ok
                    except (aiohttp.ClientError, OSError) as exc:
                        print(f"failed: {url}: {exc!r}", file=sys.stderr)
                        ok = False

            async with asyncio.TaskGroup() as group:
                for _ in range(args.j):
                    group.create_task(worker())
        return ok

    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        code = 0 if runner.run(main()) else 1
    for pid in children:
        code = max(code, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) and 1)
    return code


# -- tools -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """What a tool needs for one run: the files, where to put them, how many at once."""

    urls: list[tuple[str, str]]  # (url, output name)
    dest: Path
    inputs: Path  # a folder for the tool's own input file
    jobs: int
    python: str


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _plain_list(job: Job) -> Path:
    text = "".join(f"{url} {name}\n" for url, name in job.urls)
    return _write(job.inputs / "urls.txt", text)


def cmd_asyncconc(
    loop: str, source: str | None = None, extra: Sequence[str] = ()
) -> Callable[[Job], list[str]]:
    """The asyncconc CLI; from a copy of the package in ``source`` if given (``--variant``)."""
    here = str(Path(__file__).resolve())
    launcher = ["-m", "asyncconc"] if source is None else [here, "_run_from", source]

    def build(job: Job) -> list[str]:
        urls = _plain_list(job)
        return [job.python, *launcher, "download", str(urls), "-o", str(job.dest),
                "-j", str(job.jobs), "-q", "--loop", loop, *extra]  # fmt: skip

    return build


def cmd_aria2c(job: Job) -> list[str]:
    # One connection per file (-x1 -s1), like every other tool here.
    text = "".join(f"{url}\n  out={name}\n" for url, name in job.urls)
    inputs = _write(job.inputs / "aria2.txt", text)
    return ["aria2c", "-i", str(inputs), "-d", str(job.dest), "-j", str(job.jobs),
            "-x1", "-s1", "--file-allocation=none", "--allow-overwrite=true",
            "--auto-file-renaming=false", "--console-log-level=error", "--summary-interval=0",
            "--deferred-input=true", "--no-conf", "-q"]  # fmt: skip


def cmd_curl(job: Job) -> list[str]:
    lines = [f'url = "{url}"\noutput = "{job.dest / name}"\n' for url, name in job.urls]
    inputs = _write(job.inputs / "curl.cfg", "".join(lines))
    return ["curl", "--parallel", "--parallel-max", str(job.jobs), "--silent", "--show-error",
            "--fail", "--config", str(inputs)]  # fmt: skip


def cmd_wget2(job: Job) -> list[str]:
    # Names are the last URL segment, so -nd -P DIR gives the expected names.
    text = "".join(f"{url}\n" for url, _ in job.urls)
    inputs = _write(job.inputs / "wget2.txt", text)
    return ["wget2", "--no-config", "--max-threads", str(job.jobs), "-nd", "-P", str(job.dest),
            "-i", str(inputs), "--quiet", "--progress=none", "--no-hsts", "--no-netrc",
            "--no-robots", "--no-tcp-fastopen"]  # fmt: skip


def cmd_threads(job: Job) -> list[str]:
    urls = _plain_list(job)
    return [job.python, __file__, "_threads", str(urls), str(job.dest), "-j", str(job.jobs)]


def cmd_floor(job: Job) -> list[str]:
    urls = _plain_list(job)
    return [job.python, __file__, "_floor", str(urls), str(job.dest), "-j", str(job.jobs)]


def cmd_floor_w2(job: Job) -> list[str]:
    return [*cmd_floor(job), "--processes", "2"]


def cmd_raw(job: Job) -> list[str]:
    urls = _plain_list(job)
    raw = str(Path(__file__).resolve().with_name("raw_client.py"))
    return [job.python, raw, str(urls), str(job.dest), "-j", str(job.jobs)]


def cmd_sock_threads(job: Job) -> list[str]:
    urls = _plain_list(job)
    client = str(Path(__file__).resolve().with_name("sock_threads.py"))
    return [job.python, client, str(urls), str(job.dest), "-j", str(job.jobs)]


def cmd_aria2c_x4(job: Job) -> list[str]:
    # Four connections per file (segmented), as a user would for one big file.
    cmd = cmd_aria2c(job)
    return [{"-x1": "-x4", "-s1": "-s4"}.get(arg, arg) for arg in cmd] + ["-k1M"]


def cmd_wget2_chunk(job: Job) -> list[str]:
    # wget2 fetches 64 MiB chunks of one file over its threads.
    return [*cmd_wget2(job), "--chunk-size=64M"]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    build: Callable[[Job], list[str]]
    needs: str  # an executable, "python:MODULE", or "asyncconc@DIR" for a variant
    peer: bool  # compared against asyncconc in the ratios
    sets: frozenset[str] | None = None  # only these sets (None: every set)

    def runs_on(self, set_name: str) -> bool:
        return self.sets is None or set_name in self.sets


# Segmenting one file only makes sense where there are few, big files.
_BIG = frozenset({"large", "one"})


TOOLS = {
    "asyncconc": Tool("asyncconc", cmd_asyncconc("auto"), "python:asyncconc", False),
    "asyncconc-asyncio": Tool(
        "asyncconc-asyncio", cmd_asyncconc("asyncio"), "python:asyncconc", False
    ),
    # -j 16 in total, split over two processes (one event loop per core).
    "asyncconc-w2": Tool(
        "asyncconc-w2", cmd_asyncconc("auto", None, ["--workers", "2"]), "python:asyncconc", False
    ),
    "asyncconc-split4": Tool(
        "asyncconc-split4",
        cmd_asyncconc("auto", None, ["--split", "4"]),
        "python:asyncconc",
        False,
        _BIG,
    ),
    "asyncconc-split4-w2": Tool(
        "asyncconc-split4-w2",
        cmd_asyncconc("auto", None, ["--split", "4", "--workers", "2"]),
        "python:asyncconc",
        False,
        _BIG,
    ),
    "floor": Tool("floor", cmd_floor, "python:aiohttp", True),
    # The floor over two processes, the list split in halves, no coordination:
    # how much any two-process downloader can gain on this machine.
    "floor-w2": Tool("floor-w2", cmd_floor_w2, "python:aiohttp", True),
    # No aiohttp: one preallocated buffer per connection, os.write from it
    # (benchmarks/raw_client.py); what a lower-level receive path could reach.
    "raw": Tool("raw", cmd_raw, "python:uvloop", True),
    # No event loop: a blocking socket per file in a pool of threads, recv_into
    # one buffer and os.write from it (benchmarks/sock_threads.py); the most a
    # Python client gets from every core on big files.
    "sock-threads": Tool("sock-threads", cmd_sock_threads, "python:socket", True, _BIG),
    "aria2c": Tool("aria2c", cmd_aria2c, "aria2c", True),
    "aria2c-x4": Tool("aria2c-x4", cmd_aria2c_x4, "aria2c", True, _BIG),
    "curl": Tool("curl", cmd_curl, "curl", True),
    "wget2": Tool("wget2", cmd_wget2, "wget2", True),
    "wget2-chunk": Tool("wget2-chunk", cmd_wget2_chunk, "wget2", True, _BIG),
    "threads": Tool("threads", cmd_threads, "python:urllib", True),
}


def tool_problem(tool: Tool, python: str) -> str | None:
    """Why ``tool`` cannot run here, or ``None``."""
    if tool.needs == "python:asyncconc" or tool.needs.startswith("asyncconc@"):
        source = tool.needs.partition("@")[2]
        launcher = [__file__, "_run_from", source] if source else ["-m", "asyncconc"]
        check = [python, *launcher, "download", "--help"]
        try:
            out = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot run {python}: {exc}"
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            return f"'{' '.join(check[1:])}' failed: {last}"
        return None
    if tool.needs.startswith("python:"):
        return None
    if shutil.which(tool.needs) is None:
        return f"{tool.needs} is not installed"
    return None


# -- measuring one run -----------------------------------------------------------


@dataclass(slots=True)
class Run:
    tool: str
    set: str
    repeat: int
    wall: float
    cpu_user: float
    cpu_sys: float
    peak_kib: int
    server_cpu: float  # the server's CPU seconds during the run
    returncode: int
    timed_out: bool
    ok_files: int
    bad: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    log_tail: str = ""

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    @property
    def verified(self) -> bool:
        return not self.bad and self.returncode == 0 and not self.timed_out


TIME = "/usr/bin/time"


def measure(
    cmd: list[str], timeout: float, log: Path, cwd: str | None = None
) -> tuple[float, float, float, int, int, bool]:
    """Run ``cmd``; (wall, user, sys, max RSS KiB, returncode, timed out).

    The peak is the larger of GNU time's max RSS (one process) and the
    largest *sum* of PSS over the tool's process tree, sampled every 50 ms
    (for multi-process runs such as ``--workers 2``; PSS divides each shared
    page among the processes sharing it, so the sum is the tree's real share).
    """
    stats = log.with_suffix(".time")
    stats.unlink(missing_ok=True)
    timed = [TIME, "-f", "%U %S %M %x", "-o", str(stats), "--", *cmd]
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            timed,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            cwd=cwd,
        )
        timed_out = False
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except BaseException:  # Ctrl-C: the tool runs in its own session, stop it too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            sampler.stop()
            raise
        wall = time.perf_counter() - start
        sampler.stop()
    user = system = 0.0
    peak = 0
    code = proc.returncode
    with contextlib.suppress(OSError, ValueError, IndexError):  # IndexError: time was killed
        fields = stats.read_text().split()[-4:]
        user, system, peak, code = (
            float(fields[0]),
            float(fields[1]),
            int(fields[2]),
            int(fields[3]),
        )
    tree_user, tree_sys = sampler.cpu
    if tree_user + tree_sys > user + system + 0.05:  # workers GNU time did not see
        user, system = tree_user, tree_sys
    return wall, user, system, max(peak, sampler.peak_kib), code, timed_out


class _TreeSampler:
    """Summed PSS (max over time) and CPU of ``pid``'s descendants (psutil, if installed).

    CPU: the last user+sys seen for every process of the tree, summed; it
    catches worker processes that the tool does not reap itself (those are
    missing from GNU time's figure), but loses up to 50 ms of each process
    that exits between two samples.
    """

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.peak_kib = 0
        self.cpu_seen: dict[int, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self.pid)  # GNU time; the tool is below it
        except psutil.Error:
            return
        while not self._stop.wait(0.05):
            total = 0
            try:
                children = root.children(recursive=True)
            except psutil.Error:
                return
            for child in children:
                with contextlib.suppress(psutil.Error):
                    # PSS, not RSS: the workers share the interpreter's and
                    # the libraries' pages, which RSS would count once per
                    # process (PSS splits them). RSS where PSS is unknown.
                    try:
                        total += child.memory_full_info().pss
                    except (AttributeError, psutil.AccessDenied):
                        total += child.memory_info().rss
                    times = child.cpu_times()
                    self.cpu_seen[child.pid] = (times.user, times.system)
            self.peak_kib = max(self.peak_kib, total // 1024)

    @property
    def cpu(self) -> tuple[float, float]:
        """(user, sys) seconds summed over the tree."""
        seen = self.cpu_seen.values()
        return sum(u for u, _ in seen), sum(s for _, s in seen)


def verify(dest: Path, files: list[FileSpec]) -> tuple[int, list[str], list[str]]:
    """(files that match, problems, unexpected files) for ``dest``."""
    ok = 0
    bad: list[str] = []
    for spec in files:
        path = dest / spec.name
        try:
            size = path.stat().st_size
        except OSError:
            bad.append(f"{spec.name}: missing")
            continue
        if size != spec.size:
            bad.append(f"{spec.name}: {size} bytes, expected {spec.size}")
            continue
        with path.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        if digest != spec.sha256:
            bad.append(f"{spec.name}: sha256 mismatch")
            continue
        ok += 1
    wanted = {f.name for f in files}
    extra = sorted(p.name for p in dest.iterdir() if p.name not in wanted) if dest.exists() else []
    return ok, bad, extra


def _mount_of(path: Path) -> tuple[str, str]:
    """(device, file system type) of the mount ``path`` is on (Linux), else unknown."""
    target = os.path.realpath(path)
    while not os.path.exists(target):
        target = os.path.dirname(target)
    best, device, kind = "", "unknown", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3 or len(fields[1]) <= len(best):
                continue
            if (target + "/").startswith(fields[1].rstrip("/") + "/"):
                best, device, kind = fields[1], fields[0], fields[2]
    return device, kind


def _fs_type(path: Path) -> str:
    """The file system type of the mount ``path`` is on (Linux), else "unknown"."""
    return _mount_of(path)[1]


def skips_recent_inodes(path: Path) -> bool:
    """True if ``path`` is on an ext4 without a journal.

    There the inode allocator skips every inode freed in the last 30 s
    (35 s while its inode-table block is dirty) whose block is cached,
    checking them one by one (``recently_deleted`` in fs/ext4/ialloc.c), so
    creating 20,000 files just after 20,000 were deleted costs seconds of
    kernel time (measured here: curl's 20,000 x 16 KiB from 1.0 s to 12.8 s
    of wall, ``perf``: ``find_get_block_common`` and ``recently_deleted``).
    """
    device, kind = _mount_of(path)
    if kind != "ext4":
        return False
    task = Path("/sys/fs/ext4") / os.path.basename(device) / "journal_task"
    with contextlib.suppress(OSError):
        return task.read_text().strip() == "<none>"
    return False


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()  # write-back of this run must not land in the next one


# A set of at least this many files keeps every run's output until the set
# is done (moved aside, deleted together afterwards): deleting thousands of
# files between two runs would make the next tool's creates pay for them
# (see skips_recent_inodes). Sets of fewer, large files are deleted at once.
DEFER_DELETE_FILES = 100
# How long after a deletion an ext4 without a journal still skips the freed
# inodes (30 s, 35 s while the inode-table block is dirty), and a margin;
# waited for before a set when at least RECENT_INODE_FILES were deleted.
RECENT_INODE_SECONDS = 36.0
RECENT_INODE_FILES = 1000


def trash_of(out_root: Path) -> Path:
    """Where :func:`set_aside` moves outputs: beside them, on their file system."""
    return out_root / "_set-aside"


def set_aside(path: Path, trash: Path) -> None:
    """Move a run's output into ``trash`` (deleted by :func:`empty_trash`), then sync."""
    trash.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.rename(trash / f"{len(list(trash.iterdir()))}-{path.name}")
    os.sync()


def empty_trash(trash: Path) -> None:
    """Delete what :func:`set_aside` kept; a stamp beside it says when, if it was many files."""
    count = 0
    if trash.exists():
        count = sum(len(os.listdir(run)) for run in trash.iterdir() if run.is_dir())
    clean(trash)
    if count >= RECENT_INODE_FILES:
        trash.with_name("trash-emptied").write_text(f"{time.time()}\n")


def wait_out_deletions(trash: Path) -> None:
    """Sleep until the last :func:`empty_trash` of many files (any invocation) is not recent."""
    stamp = trash.with_name("trash-emptied")
    try:
        emptied = float(stamp.read_text())
    except (OSError, ValueError):
        return
    wait = RECENT_INODE_SECONDS - (time.time() - emptied)
    if wait > 0:
        print(f"waiting {wait:.0f} s: inodes deleted after the last set are still 'recent'")
        time.sleep(wait)


def _tail(path: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""


def run_tool(
    tool: Tool, spec: SetSpec, files: list[FileSpec], server: Server, work: Path, args: Namespace
) -> Run:
    dest = (args.out or work / "out") / tool.name
    inputs = work / "inputs" / f"{spec.name}-{tool.name}"
    clean(dest)
    inputs.mkdir(parents=True, exist_ok=True)
    urls = [(f"{server.base_url}/{f.name}", f.name) for f in files]
    job = Job(urls, dest, inputs, args.jobs, args.python)
    cmd = tool.build(job)
    if tool.name != "threads":
        dest.mkdir(parents=True, exist_ok=True)
    log = work / "logs" / f"{spec.name}-{tool.name}-{args.current_repeat}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout or spec.timeout
    # A variant runs in its own folder: a worker process (a new interpreter,
    # '' first on its sys.path) would import the working tree's package
    # from the repository root.
    cwd = tool.needs.partition("@")[2] or None
    served_before = server.cpu_seconds()
    wall, user, system, peak, code, timed_out = measure(cmd, timeout, log, cwd)
    served = server.cpu_seconds() - served_before
    ok, bad, extra = verify(dest, files)
    run = Run(
        tool.name,
        spec.name,
        args.current_repeat,
        wall,
        user,
        system,
        peak,
        served,
        code,
        timed_out,
        ok,
        bad,
        extra,
    )
    if not run.verified:
        run.log_tail = _tail(log)
    if args.recent_inodes and spec.count >= DEFER_DELETE_FILES:
        set_aside(dest, trash_of(args.out or work / "out"))
    else:
        clean(dest)
    return run


# -- reporting -------------------------------------------------------------------


class Namespace(argparse.Namespace):
    sets: list[str]
    tools: list[str]
    quick: bool
    workdir: Path
    repeat: int
    pick: str
    jobs: int
    timeout: float | None
    python: str
    server: str
    nginx_workers: int
    latency_server: str
    install_missing: bool
    json: Path | None
    variant: list[str]
    baseline: str
    current_repeat: int
    recent_inodes: bool


@dataclass(slots=True)
class Summary:
    """The picked run of one tool on one set, and the spread of its repeats."""

    run: Run
    walls: list[float]
    failures: int

    @property
    def wall_range(self) -> str:
        return f"{min(self.walls):.2f}-{max(self.walls):.2f}"


def summarise(runs: list[Run], pick: str) -> Summary:
    good = [r for r in runs if r.verified]
    pool = good or runs
    ordered = sorted(pool, key=lambda r: r.wall)
    chosen = ordered[0] if pick == "best" else ordered[(len(ordered) - 1) // 2]
    return Summary(chosen, [r.wall for r in pool], len(runs) - len(good))


def set_table(spec: SetSpec, summaries: dict[str, Summary], jobs: int) -> list[str]:
    ideal = spec.ideal_seconds(jobs)
    head = f"{'tool':<18} {'wall s':>7} {'(min-max)':>11} {'files/s':>8} {'MB/s':>8} "
    head += f"{'CPU s':>6} {'usr+sys':>11} {'srv CPU':>7} {'peak MiB':>8}"
    head += f" {'wall/ideal':>10}" if ideal else ""
    head += "  verified"
    lines = [head]
    for name, s in summaries.items():
        r = s.run
        files_s = spec.count / r.wall
        mb_s = spec.total_bytes / MB / r.wall
        line = f"{name:<18} {r.wall:>7.2f} {s.wall_range:>11} {files_s:>8.0f} {mb_s:>8.1f} "
        line += f"{r.cpu:>6.2f} {f'{r.cpu_user:.2f}+{r.cpu_sys:.2f}':>11} {r.server_cpu:>7.2f}"
        line += f" {r.peak_mib:>8.1f}"
        line += f" {r.wall / ideal:>10.2f}" if ideal else ""
        status = f"{r.ok_files}/{spec.count}"
        if r.timed_out:
            status += " TIMEOUT"
        elif r.returncode:
            status += f" exit {r.returncode}"
        if s.failures:
            status += f" ({s.failures} failed run{'s' if s.failures > 1 else ''})"
        if r.extra:
            status += f" +{len(r.extra)} extra: {', '.join(r.extra[:3])}"
        lines.append(line + "  " + status)
    return lines


def ratio_lines(
    spec: SetSpec, summaries: dict[str, Summary], jobs: int, baseline: str
) -> list[str]:
    """``baseline`` against each peer (and other asyncconc runs), by the set's measure.

    small: files/s ratio; large: MB/s ratio (both = peer wall / our wall, as
    every tool moves the same files); latency: wall / ideal; every set: CPU
    and peak memory. Above 1.00x means asyncconc is faster (or uses more
    CPU/memory, for those two lines).
    """
    ours = summaries.get(baseline)
    if ours is None:
        return []
    r = ours.run
    peers = [(n, s) for n, s in summaries.items() if TOOLS[n].peer]
    own = [(n, s) for n, s in summaries.items() if not TOOLS[n].peer and n != baseline]
    lines: list[str] = []
    unit = {"small": "files/s", "many": "files/s", "large": "MB/s", "one": "MB/s"}.get(spec.name)
    if unit:
        parts = [f"{n} {s.run.wall / r.wall:.2f}x" for n, s in peers]
        lines.append(f"  {baseline} {unit} / peer {unit}: " + ", ".join(parts))
        if own:
            parts = [f"{n} {r.wall / s.run.wall:.2f}x" for n, s in own]
            lines.append(f"  other asyncconc runs, {unit} / {baseline}: " + ", ".join(parts))
    ideal = spec.ideal_seconds(jobs)
    if ideal:
        parts = [f"{n} {s.run.wall / ideal:.2f}" for n, s in summaries.items()]
        lines.append(f"  wall / ideal ({ideal:.2f} s): " + ", ".join(parts))
        parts = [f"{n} {r.wall / s.run.wall:.2f}x" for n, s in peers]
        lines.append(f"  {baseline} wall / peer wall: " + ", ".join(parts))
    parts = [f"{n} {r.cpu / s.run.cpu:.2f}x" for n, s in peers if s.run.cpu > 0]
    lines.append(f"  {baseline} CPU s / peer CPU s: " + ", ".join(parts))
    # Whether a run was bound by the machine: the client and the server
    # share its cores, so (client + server CPU) / wall near the core count
    # means no client can go faster here without spending less CPU.
    parts = [
        f"{n} {(s.run.cpu + s.run.server_cpu) / s.run.wall:.2f}"
        for n, s in summaries.items()
        if s.run.wall > 0
    ]
    lines.append(f"  cores busy, (CPU + srv CPU) / wall, of {os.cpu_count()}: " + ", ".join(parts))
    parts = [f"{n} {r.peak_mib / s.run.peak_mib:.2f}x" for n, s in peers if s.run.peak_kib]
    lines.append(f"  {baseline} peak {r.peak_mib:.1f} MiB / peer peak: " + ", ".join(parts))
    if not r.verified:
        lines.append(f"  NOTE: the {baseline} run did not verify; ratios are not meaningful")
    return lines


def startup_cost(python: str, work: Path) -> tuple[float, float, float] | None:
    """Best of 3: (wall, CPU, peak MiB) of starting Python and importing aiohttp + asyncconc."""
    best: tuple[float, float, float] | None = None
    log = work / "logs" / "startup.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        cmd = [python, "-c", "import aiohttp, asyncconc.cli"]
        wall, user, system, peak, code, _ = measure(cmd, 60, log)
        if code != 0:
            return None
        if best is None or wall < best[0]:
            best = (wall, user + system, peak / 1024)
    return best


def startup_download(python: str, work: Path) -> tuple[float, float, float] | None:
    """Best of 3: (wall, CPU, peak MiB) of ``python -m asyncconc download`` of an empty list.

    The issue's start-up target (<= 0.15 s): everything a run pays before
    its first request, with nothing to fetch.
    """
    best: tuple[float, float, float] | None = None
    log = work / "logs" / "startup-download.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    empty = _write(work / "logs" / "empty.txt", "")
    out = work / "out" / "startup"
    # Compiled as a pip install leaves it: with PYTHONDONTWRITEBYTECODE set (as
    # on these machines) an editable install would recompile every module
    # changed since its last .pyc at each start.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    package = REPO / "asyncconc"
    subprocess.run([python, "-m", "compileall", "-q", str(package)], env=env, check=False,
                   stdout=subprocess.DEVNULL, timeout=120)  # fmt: skip
    for _ in range(3):
        clean(out)
        cmd = [python, "-m", "asyncconc", "download", str(empty), "-o", str(out), "-q"]
        wall, user, system, peak, code, _ = measure(cmd, 60, log)
        if code != 0:
            return None
        if best is None or wall < best[0]:
            best = (wall, user + system, peak / 1024)
    clean(out)
    return best


def load_line() -> str:
    """The load averages now, as ``uptime`` prints them (the machine is shared)."""
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


MEMORY_TARGET_MB = 100.0


def target_lines(spec: SetSpec, summaries: dict[str, Summary], jobs: int) -> list[str]:
    """The issue's targets for this set, each with the measured ratio and met / NOT met.

    Ratios are of wall times within this run (every tool moves the same
    bytes): ``a / b`` throughput = ``b.wall / a.wall``.
    """

    def speed(a: str, b: str) -> float | None:
        if a in summaries and b in summaries:
            return summaries[b].run.wall / summaries[a].run.wall
        return None

    checks: list[tuple[str, float | None, float, bool]] = []  # label, value, bound, at least?
    if spec.name in ("small", "many"):
        floor = speed("floor", "asyncconc")  # asyncconc wall / floor wall
        checks.append(("per-file cost: asyncconc wall / floor wall", floor, 1.3, False))
    if spec.name == "many":
        checks.append(("asyncconc / curl", speed("asyncconc", "curl"), 0.8, True))
        checks.append(("asyncconc-w2 / asyncconc", speed("asyncconc-w2", "asyncconc"), 1.6, True))
        checks.append(("asyncconc-w2 / curl", speed("asyncconc-w2", "curl"), 1.2, True))
    if spec.name == "small":
        checks.append(("asyncconc / wget2", speed("asyncconc", "wget2"), 1.0, True))
    if spec.name == "large":
        checks.append(("asyncconc / curl", speed("asyncconc", "curl"), 1.0, True))
        checks.append(("asyncconc / threads", speed("asyncconc", "threads"), 1.0, True))
        best = max(
            (n for n in summaries if n.startswith("asyncconc")),
            key=lambda n: -summaries[n].run.wall,
            default=None,
        )
        if best is not None:
            checks.append((f"all cores ({best}) / wget2", speed(best, "wget2"), 1.0, True))
    if spec.name == "one":
        splits = [n for n in summaries if n.startswith("asyncconc-split")]
        best = min(splits, key=lambda n: summaries[n].run.wall, default=None)
        if best is not None:
            checks.append((f"{best} / curl", speed(best, "curl"), 1.2, True))
    ideal = spec.ideal_seconds(jobs)
    if ideal and "asyncconc" in summaries:
        ours = summaries["asyncconc"].run.wall
        checks.append(("asyncconc wall / ideal", ours / ideal, 1.10, False))
        if "threads" in summaries:
            mine = ours / summaries["threads"].run.wall
            checks.append(("asyncconc wall / threads wall", mine, 1.0, False))
    for name, summary in summaries.items():
        if name.startswith("asyncconc"):
            mb = summary.run.peak_kib * 1024 / MB
            checks.append((f"{name} peak MB (summed)", mb, MEMORY_TARGET_MB, False))
    lines = []
    for label, value, bound, at_least in checks:
        if value is None:
            continue
        met = value >= bound if at_least else value <= bound
        sign = ">=" if at_least else "<="
        verdict = "met" if met else "NOT met"
        lines.append(f"  target {label}: {value:.2f} ({sign} {bound:g}) {verdict}")
    return lines + bound_lines(summaries)


def bound_lines(summaries: dict[str, Summary]) -> list[str]:
    """What two processes can gain on this machine at all (the server needs CPU too).

    ``floor-w2 / floor`` is the most any two-process client gained in this
    run; each two-process asyncconc run is set against ``floor-w2``, and
    each ``-w2`` variant against its one-process twin (``X-w2`` / ``X``).
    """

    def speed(a: str, b: str) -> float | None:
        if a in summaries and b in summaries:
            return summaries[b].run.wall / summaries[a].run.wall
        return None

    lines = []
    gain = speed("floor-w2", "floor")
    if gain is not None:
        lines.append(f"  bound: floor-w2 / floor: {gain:.2f} (two processes, no coordination)")
    for name in summaries:
        if name.startswith("asyncconc") and "-w2" in name:
            for other in ("floor-w2", name.replace("-w2", "")):
                value = speed(name, other)
                if value is not None and other != name:
                    lines.append(f"  {name} / {other}: {value:.2f}")
    return lines


# -- main ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark asyncconc against aria2c, curl, wget2 and a thread pool.",
    )
    parser.add_argument(
        "--sets", default=",".join(ALL_SETS), help="comma list of " + ",".join(ALL_SETS)
    )
    parser.add_argument(
        "--tools", default=",".join(DEFAULT_TOOLS), help="comma list of " + ",".join(TOOLS)
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes (a smoke run)")
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "_work")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the tools write (default WORKDIR/out); a tmpfs folder such as "
        "/dev/shm/bench takes the file system's cost out of the figures",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool and set (default 3)")
    parser.add_argument("--pick", choices=("median", "best"), default="median")
    parser.add_argument("-j", "--jobs", type=int, default=16, help="concurrency for every tool")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per run (default: per set)"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for asyncconc/threads"
    )
    parser.add_argument(
        "--server",
        choices=("auto", "nginx", "python"),
        default="auto",
        help="server for small/large: nginx when installed (auto)",
    )
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument(
        "--latency-server",
        choices=("lean", "aiohttp"),
        default="lean",
        help="server for the delayed set: a lean in-memory asyncio server (default) or "
        "asyncconc.testing.serve_files",
    )
    parser.add_argument(
        "--install-missing",
        action="store_true",
        help="apt-get install nginx, aria2, curl, wget2 when missing",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every run as JSON")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also run asyncconc imported from DIR/asyncconc (a patched copy) as "
        "'asyncconc[LABEL]'; a LABEL ending in -w2 runs it with --workers 2, one "
        "holding split4 with --split 4; repeatable",
    )
    parser.add_argument(
        "--baseline",
        default="asyncconc",
        help="the tool the ratios compare against the peers (default: asyncconc)",
    )
    args = parser.parse_args(argv, namespace=Namespace())
    args.sets = [s for s in str(args.sets).split(",") if s]
    args.tools = [t for t in str(args.tools).split(",") if t]
    for spec in args.variant:
        label, sep, source = spec.partition("=")
        if not sep or not label or not (Path(source) / "asyncconc" / "__init__.py").is_file():
            parser.error(f"--variant {spec!r}: expected LABEL=DIR with DIR/asyncconc/__init__.py")
        name = f"asyncconc[{label}]"
        extra = ["--split", "4"] if "split4" in label else []
        extra += ["--workers", "2"] if label.endswith("-w2") else []
        TOOLS[name] = Tool(name, cmd_asyncconc("auto", source, extra), f"asyncconc@{source}", False)
        args.tools.append(name)
    for s in args.sets:
        if s not in ALL_SETS:
            parser.error(f"unknown set {s!r}")
    for t in args.tools:
        if t not in TOOLS:
            parser.error(f"unknown tool {t!r}")
    if args.baseline not in args.tools:
        parser.error(f"--baseline {args.baseline!r} is not among the tools")
    if args.repeat < 1 or args.jobs < 1:
        parser.error("--repeat and --jobs must be at least 1")
    return args


def install_missing() -> None:
    wanted = {"nginx": "nginx", "aria2c": "aria2", "curl": "curl", "wget2": "wget2"}
    missing = [pkg for exe, pkg in wanted.items() if shutil.which(exe) is None]
    if not missing:
        return
    print(f"installing with apt-get: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, timeout=600, check=False)
    for pkg in missing:  # one by one: wget2 may not exist on every release
        subprocess.run(["apt-get", "install", "-y", "-q", pkg], env=env, timeout=600, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.access(TIME, os.X_OK):
        print(f"error: {TIME} (GNU time) is needed: apt-get install time", file=sys.stderr)
        return 2
    if args.install_missing:
        install_missing()
    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    specs = QUICK_SETS if args.quick else FULL_SETS

    tools: list[Tool] = []
    for name in args.tools:
        problem = tool_problem(TOOLS[name], args.python)
        if problem:
            print(f"skipping {name}: {problem}")
        else:
            tools.append(TOOLS[name])
    if not tools:
        print("error: no tool can run", file=sys.stderr)
        return 2

    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if args.server == "nginx" and nginx is None:
        print("error: --server nginx but nginx is not installed", file=sys.stderr)
        return 2
    use_nginx = nginx is not None and args.server != "python"

    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"machine: {os.cpu_count()} CPUs, {load_line()} (shared: other work runs too)")
    print(f"concurrency: -j {args.jobs} for every tool; repeats: {args.repeat} ({args.pick} shown)")
    out_root = args.out or args.workdir / "out"
    recent_inodes = args.recent_inodes = skips_recent_inodes(out_root)
    print(
        f"output: {out_root} ({_fs_type(out_root)}"
        + (
            ", no journal: inodes freed in the last 30 s are skipped one by one; "
            f"sets of {DEFER_DELETE_FILES}+ files delete their outputs after the set"
            if recent_inodes
            else ""
        )
        + ")"
    )
    trash = trash_of(out_root)
    empty_trash(trash)  # left by an interrupted invocation
    print(f"tools: {', '.join(_tool_version(t) for t in tools)}")
    cost = (
        startup_cost(args.python, work)
        if any(t.needs == "python:asyncconc" for t in tools)
        else None
    )
    if cost:
        print(
            f"python start-up + import aiohttp, asyncconc: {cost[0]:.2f} s wall, "
            f"{cost[1]:.2f} CPU s, {cost[2]:.1f} MiB (counts on every asyncconc run)"
        )
    empty_run = (
        startup_download(args.python, work)
        if any(t.needs == "python:asyncconc" for t in tools)
        else None
    )
    if empty_run:
        verdict = "met" if empty_run[0] <= 0.15 else "NOT met"
        print(
            f"start-up: 'asyncconc download' of an empty list: {empty_run[0]:.3f} s wall "
            f"(best of 3), {empty_run[1]:.2f} CPU s, {empty_run[2]:.1f} MiB; "
            f"target <= 0.15 s {verdict}"
        )

    all_runs: list[Run] = []
    report: dict[str, object] = {"argv": sys.argv, "sets": {}}
    data_root = work / ("data-quick" if args.quick else "data")  # same names, other sizes
    exit_code = 0
    for set_name in args.sets:
        spec = specs[set_name]
        t0 = time.monotonic()
        files = prepare_set(spec, data_root)
        root = data_root / set_name
        warmed = warm(root, files)
        print(
            f"\n== {set_name}: {spec.describe()} (data ready in {time.monotonic() - t0:.1f} s, "
            f"page cache warmed in {warmed:.1f} s)"
        )
        if spec.delay:
            server_cm = run_python_server(
                args.python, root, work / "server", spec.delay, args.latency_server
            )
        elif not use_nginx:
            server_cm = run_python_server(args.python, root, work / "server", spec.delay)
        else:
            assert nginx is not None
            server_cm = run_nginx(nginx, root, work / "server", args.nginx_workers)
        set_tools = [t for t in tools if t.runs_on(set_name)]
        runs: dict[str, list[Run]] = {t.name: [] for t in set_tools}
        if recent_inodes:
            wait_out_deletions(trash)
        with server_cm as server:
            print(f"server: {server.description}")
            print(load_line(), flush=True)
            for rep in range(args.repeat):
                args.current_repeat = rep
                shift = rep % len(set_tools)
                for tool in set_tools[shift:] + set_tools[:shift]:  # rotate the order
                    run = run_tool(tool, spec, files, server, work, args)
                    runs[tool.name].append(run)
                    all_runs.append(run)
                    mark = "ok" if run.verified else f"FAILED ({run.log_tail or run.bad[:3]})"
                    print(f"  run {rep + 1} {tool.name:<18} {run.wall:7.2f} s  {mark}", flush=True)
        summaries = {name: summarise(rs, args.pick) for name, rs in runs.items()}
        print()
        for line in (
            set_table(spec, summaries, args.jobs)
            + ratio_lines(spec, summaries, args.jobs, args.baseline)
            + target_lines(spec, summaries, args.jobs)
        ):
            print(line)
        print(f"  after the set: {load_line()}")
        empty_trash(trash)
        if any(not s.run.verified for s in summaries.values()):
            exit_code = 1
        report["sets"][set_name] = {  # type: ignore[index]
            "spec": dataclasses.asdict(spec),
            "server": server.description,
            "picked": {n: dataclasses.asdict(s.run) for n, s in summaries.items()},
        }
    report["runs"] = [dataclasses.asdict(r) for r in all_runs]
    out = args.json or work / "results.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"\nall runs: {out}")
    return exit_code


def _tool_version(tool: Tool) -> str:
    probes = {"aria2c": ["aria2c", "--version"], "curl": ["curl", "--version"],
              "wget2": ["wget2", "--version"]}  # fmt: skip
    probe = probes.get(tool.needs)
    if probe is None:
        return tool.name
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
        words = out.stdout.split()
        version = next((w for w in words if w[:1].isdigit()), "?")
        return f"{tool.name} {version}"
    return tool.name


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        sys.exit(serve_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "_serve_lean":
        sys.exit(lean_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "_run_from":
        sys.exit(run_from_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "_threads":
        sys.exit(threads_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "_floor":
        sys.exit(floor_main(sys.argv[2:]))
    sys.exit(main())
