"""`python -m asyncconc serve` beside nginx and `python -m http.server`, with ab.

Every server serves the same folder on 127.0.0.1 in the same run; `ab`
(apache2-utils) loads each in turn and the table prints requests/s, MB/s and
the ratios the serve issue targets. These machines are shared and noisy:
compare ratios within one run, not absolute figures across runs.

    python benchmarks/serve.py [--requests 5000] [--big-requests 200] [--workers 2]
                               [--baseline CHECKOUT]

``--baseline CHECKOUT`` adds the same command run from another checkout of
asyncconc (``PYTHONPATH=CHECKOUT``, e.g. main), to compare a change in one run.

Needs `ab` and `nginx` on PATH (`apt-get install apache2-utils nginx`); a
server that is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

SMALL = 64 * 1024
BASELINE = "asyncconc (baseline)"
BIG = 10 * 1000 * 1000


@dataclass(frozen=True)
class Load:
    name: str
    path: str
    concurrency: int
    keepalive: bool
    requests: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


@contextmanager
def started(
    argv: list[str], port: int, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd
    )
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def nginx_argv(root: Path, port: int, work: Path) -> list[str]:
    conf = work / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""
    )
    return ["nginx", "-c", str(conf), "-p", str(work)]


def run_ab(port: int, load: Load) -> tuple[float, float]:
    """(requests/s, MB/s) for one ab run; failed or non-2xx requests are an error."""
    argv = ["ab", "-q", "-s", "60", "-n", str(load.requests), "-c", str(load.concurrency)]
    if load.keepalive:
        argv.append("-k")
    argv.append(f"http://127.0.0.1:{port}{load.path}")
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if run.returncode != 0:
        # http.server's listen backlog of 5 resets connections at -c 100.
        print(f"  ab failed against port {port} ({load.name}): {run.stderr.strip()[-120:]}")
        return float("nan"), float("nan")
    out = run.stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    if failed or non_2xx:
        raise RuntimeError(f"ab saw failures on port {port}:\n{out}")
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    kbps = float(re.search(r"Transfer rate:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, kbps * 1024 / 1e6


def servers(
    root: Path, work: Path, workers: int, baseline: Path | None
) -> dict[str, tuple[list[str], int]]:
    python = sys.executable
    found: dict[str, tuple[list[str], int]] = {}
    if baseline is not None:
        port = free_port()
        found[BASELINE] = (
            [python, "-m", "asyncconc", "serve", str(root), "--port", str(port)],
            port,
        )
    if shutil.which("nginx"):
        port = free_port()
        found["nginx (1 worker)"] = (nginx_argv(root, port, work / "nginx"), port)
    port = free_port()
    found["http.server"] = (
        [python, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        port,
    )
    port = free_port()
    found["asyncconc"] = (
        [python, "-m", "asyncconc", "serve", str(root), "--port", str(port)],
        port,
    )
    if workers > 1:
        port = free_port()
        found[f"asyncconc --workers {workers}"] = (
            [
                python,
                "-m",
                "asyncconc",
                "serve",
                str(root),
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            port,
        )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="ab -n for 64 KiB (5000)")
    parser.add_argument("--big-requests", type=int, default=200, help="ab -n for 10 MB (200)")
    parser.add_argument("--workers", type=int, default=2, help="asyncconc --workers N (2)")
    parser.add_argument("--baseline", type=Path, default=None, help="another asyncconc checkout")
    args = parser.parse_args()
    if not shutil.which("ab"):
        sys.exit("needs ab: apt-get install apache2-utils")
    loads = [
        Load("64 KiB, -c 10", "/k64.bin", 10, False, args.requests),
        Load("64 KiB, -c 100", "/k64.bin", 100, False, args.requests),
        Load("64 KiB, -c 100 -k", "/k64.bin", 100, True, args.requests),
        Load("10 MB, -c 4 -k", "/m10.bin", 4, True, args.big_requests),
    ]
    print(f"load average at start: {os.getloadavg()}")
    results: dict[str, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        root, work = Path(tmp) / "root", Path(tmp) / "work"
        root.mkdir()
        os.chmod(tmp, 0o755)  # nginx's worker runs as another user
        (work / "nginx").mkdir(parents=True)
        (root / "k64.bin").write_bytes(os.urandom(SMALL))
        (root / "m10.bin").write_bytes(os.urandom(BIG))
        for name, (argv, port) in servers(root, work, args.workers, args.baseline).items():
            env, cwd = None, None
            if name == BASELINE:  # its own folder first on sys.path, not this one
                cwd = args.baseline.resolve()
                env = {**os.environ, "PYTHONPATH": str(cwd)}
            with started(argv, port, env, cwd) as proc:
                tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]
                rss_before = sum(p.memory_info().rss for p in tree)
                results[name] = {load.name: run_ab(port, load) for load in loads}
                tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]
                rss_after = sum(p.memory_info().rss for p in tree)
            print(f"{name}: RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB")
    print(f"load average at end: {os.getloadavg()}")
    print()
    names = list(results)
    print("| load | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for load in loads:
        unit = 1 if load.path == "/m10.bin" else 0
        cells = [f"{results[n][load.name][unit]:,.0f}" for n in names]
        print(f"| {load.name} ({'MB/s' if unit else 'req/s'}) | " + " | ".join(cells) + " |")
    print()
    for load in loads:
        unit = 1 if load.path == "/m10.bin" else 0
        ours = results["asyncconc"][load.name][unit]
        for peer in ("http.server", "nginx (1 worker)", BASELINE):
            if peer in results:
                print(
                    f"{load.name}: asyncconc / {peer} = {ours / results[peer][load.name][unit]:.2f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
