"""``python -m asyncconc demo``: the main job, end to end, with no internet.

Starts the built-in loopback file server with a generated set of files
(a few of them misbehaving: a 503 that recovers, a body that ends early, a
Content-Disposition name), downloads them all with the real downloader,
verifies every sha256 and prints the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from asyncconc.downloader._cli import run_download
from asyncconc.downloader._models import DownloadRequest
from asyncconc.testing._fileserver import serve_files

__all__ = ["register"]

# (count, size): 96 files, 52 MiB in all.
_SETS = ((64, 64 * 1024), (24, 1 << 20), (8, 3 << 20))


def register(subparsers: Any) -> None:
    from asyncconc.cli import add_loop_option

    parser = subparsers.add_parser(
        "demo",
        help="download a generated set of files from the built-in loopback server",
        description=(
            "Start the built-in loopback file server, download a generated set of files "
            "from it with the real downloader (checking every sha256) and print the summary. "
            "No internet needed."
        ),
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=None,
        help="keep the files in DIR (default: a temporary folder, removed afterwards)",
    )
    parser.add_argument("-j", "--jobs", type=int, default=16, metavar="N", help="downloads at once")
    parser.add_argument("-q", "--quiet", action="store_true", help="only the summary")
    add_loop_option(parser)
    parser.set_defaults(handler=_handle)


async def _start_server(stack: contextlib.AsyncExitStack) -> list[DownloadRequest]:
    server = await stack.enter_async_context(serve_files())
    requests: list[DownloadRequest] = []
    n = 0
    for count, size in _SETS:
        for _ in range(count):
            n += 1
            name = f"file-{n:03d}.bin"
            served = server.add_generated(name, size, seed=n)
            faults: dict[str, object] = {}
            if n == 5:
                faults = {"fail": 1}  # one 503, then fine: shows a retry
            elif n == 70:
                faults = {"truncate": 300_000, "times": 1}  # ends early once: resumed
            elif n == 90:
                faults = {"cd": 'attachment; filename="report-from-server.bin"'}
            requests.append(
                DownloadRequest.from_url(server.url(name, **faults), sha256=served.sha256)
            )
    return requests


def _handle(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        if args.output is None:
            dest = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="asyncconc-demo-")))
        else:
            dest = Path(args.output)
            dest.mkdir(parents=True, exist_ok=True)
        print(f"asyncconc demo: downloading from the built-in loopback server into {dest}")
        code = run_download(
            _start_server,
            dest,
            loop=args.loop,
            quiet=args.quiet,
            stdout=sys.stdout,
            options={"concurrency": max(1, args.jobs), "backoff": 0.05},
        )
        if code == 0:
            print("every file verified against its sha256")
        return code
