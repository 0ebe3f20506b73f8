"""Requests lost when `serve --workers` workers are SIGKILLed under `ab` load.

Both accept models side by side in one run: one listening socket shared by
every worker (nginx's default, what `serve --workers` does) and one
`SO_REUSEPORT` socket per worker (`--accept-queues per-worker`), where the
connections queued at a killed worker are reset with it.

    python benchmarks/serve_kill.py [--requests 40000] [--kills 8] [--rounds 3]

Each round: `ab -r -c 100` (a new connection per request) on a 1 KiB file,
and a worker SIGKILLed every half second while ab runs (the supervisor
replaces it). Printed: ab's "Failed requests" per model and round, with
its breakdown (one broken request can count under several of Receive,
Length and Exceptions, so the total can exceed the requests made).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def one_round(root: Path, model: str, requests: int, kills: int) -> tuple[str, int, float]:
    """(ab's failed requests with its breakdown, complete requests, requests/s)."""
    argv = [sys.executable, "-m", "asyncconc", "serve", str(root), "--workers", "2"]
    argv += ["--accept-queues", model]
    master = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert master.stdout is not None
        line = master.stdout.readline()
        url = line.split(" at ")[1].split()[0] + "k1.bin"
        ab = subprocess.Popen(
            ["ab", "-r", "-q", "-s", "30", "-n", str(requests), "-c", "100", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(1.0)  # ab under way
        for _ in range(kills):
            if ab.poll() is not None:
                break
            workers = psutil.Process(master.pid).children()
            if workers:
                os.kill(workers[0].pid, signal.SIGKILL)
                master.stdout.readline()  # "server worker N exited ...; replacing it"
            time.sleep(0.5)
        out, _ = ab.communicate(timeout=600)
    finally:
        master.send_signal(signal.SIGINT)
        try:
            master.wait(30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        if master.stdout is not None:
            master.stdout.close()
    failed = re.search(r"Failed requests:\s+(\d+)\s*(\(.*?\))?", out, re.S)
    complete = re.search(r"Complete requests:\s+(\d+)", out)
    rps = re.search(r"Requests per second:\s+([\d.]+)", out)
    if not (failed and complete and rps):
        raise RuntimeError(f"ab output not understood:\n{out}")
    detail = " ".join((failed.group(2) or "").split())
    return f"{failed.group(1)} {detail}", int(complete.group(1)), float(rps.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="serve-kill-") as tmp:
        root = Path(tmp)
        (root / "k1.bin").write_bytes(os.urandom(1024))
        for n in range(args.rounds):
            for model in ("shared", "per-worker"):
                failed, complete, rps = one_round(root, model, args.requests, args.kills)
                print(
                    f"round {n + 1} {model:>10}: failed {failed} of {complete} complete "
                    f"with {args.kills} kills ({rps:,.0f} req/s)",
                    flush=True,
                )
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
