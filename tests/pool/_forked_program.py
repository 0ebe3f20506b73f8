"""A program that opens a pool-owned DaskPool, for tests/pool/test_dask_forked.py.

Run as ``python -m tests.pool._forked_program [options]`` from the
repository's root. It runs one thread when the pool opens (unless
``--thread``), so the pool's fork server is a fork of it. It reports each
step as one JSON object a line on stdout, and where a test must act while
the pool runs it waits for a line on stdin.

``--thread``
    Start a second thread (alive until the end) before the pool opens.
``--peer PORT``
    Before the pool opens, connect to 127.0.0.1:PORT and listen on a port
    of its own (reported as ``listening``). Once the pool runs, close both,
    report ``sockets-closed`` and wait for a line.
``--crash MARKER``
    Map :func:`tests.pool._tasks.sigkill_once` (its first call SIGKILLs its
    worker) with ``retries=1``; report ``crashed`` with the results.
``--hold``
    Wait for a line before closing the pool (a test kills the program then).
``--unknown-layout``
    Give ``multiprocessing.forkserver.main`` a keyword-only parameter more
    (as 3.14's ``authkey_r``), so the fork server's layout is not the known one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing.forkserver
import os
import socket
import sys
import threading
from pathlib import Path

from asyncconc import DaskPool, run
from tests.pool._tasks import inc, sigkill_once


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def next_line() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


def forkserver_pid() -> int | None:
    pid: int | None = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    return pid


async def session(args: argparse.Namespace) -> None:
    held: list[socket.socket] = []
    if args.peer is not None:
        held.append(socket.create_connection(("127.0.0.1", args.peer)))
        listener = socket.create_server(("127.0.0.1", 0))
        held.append(listener)
        say("listening", port=listener.getsockname()[1])
    say("opening", threads=len(os.listdir("/proc/self/task")))
    async with DaskPool(workers=2, retries=1 if args.crash else 0) as pool:
        results = [x async for x in pool.map(inc, range(50))]
        workers = await pool.client.run(os.getpid)
        parents = await pool.client.run(os.getppid)
        say(
            "open",
            pid=os.getpid(),
            server=forkserver_pid(),
            workers=sorted(workers.values()),
            parents=sorted(set(parents.values())),
            results_ok=results == list(range(1, 51)),
        )
        if held:
            for sock in held:
                sock.close()
            say("sockets-closed")
            await next_line()
        if args.crash:
            got = [x async for x in pool.map(sigkill_once, [args.crash] * 4)]
            say("crashed", results=len(got), crashed_once=Path(args.crash).exists())
        if args.hold:
            await next_line()
    say("pool-closed", server=forkserver_pid())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--thread", action="store_true")
    parser.add_argument("--peer", type=int)
    parser.add_argument("--crash")
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--unknown-layout", action="store_true")
    args = parser.parse_args()
    if args.unknown_layout:
        known = multiprocessing.forkserver.main

        def main_with_a_key(
            listener_fd: int,
            alive_r: int,
            preload: list[str],
            main_path: str | None = None,
            sys_path: list[str] | None = None,
            *,
            authkey_r: int | None = None,
        ) -> None:
            known(listener_fd, alive_r, preload, main_path, sys_path)

        multiprocessing.forkserver.main = main_with_a_key  # type: ignore[assignment]
    stop = threading.Event()
    if args.thread:
        threading.Thread(target=stop.wait, daemon=True).start()
    try:
        run(session(args))
    finally:
        stop.set()


if __name__ == "__main__":
    main()
