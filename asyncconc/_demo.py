"""``python -m asyncconc demo``: the main job and every lesson, with no internet.

First the main job: the built-in loopback file server with a generated set
of files (a few of them misbehaving: a 503 that recovers, a body that ends
early, a Content-Disposition name), all downloaded with the real downloader,
every sha256 verified, and the summary. Then the lesson's scenarios (all but
the GUI), each the old way beside the asyncconc way, in one comparison
table (the distributed-processes lesson when the ``dask`` extra is
installed). ``--quick`` shrinks the lessons (for smoke tests), ``--no-lessons``
skips them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncconc.downloader._models import DownloadRequest
    from asyncconc.lessons._table import Timing

__all__ = ["register"]

# (count, size): 96 files, 52 MiB in all.
_SETS = ((64, 64 * 1024), (24, 1 << 20), (8, 3 << 20))


def register(subparsers: Any) -> None:
    from asyncconc.cli import add_loop_option, int_at_least

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
    parser.add_argument(
        "-j", "--jobs", type=int_at_least(1), default=16, metavar="N", help="downloads at once"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only the summary")
    parser.add_argument("--quick", action="store_true", help="small sizes for the lessons")
    parser.add_argument("--no-lessons", action="store_true", help="only the download job")
    add_loop_option(parser)
    parser.set_defaults(handler=_handle)


async def _start_server(stack: contextlib.AsyncExitStack) -> list[DownloadRequest]:
    from asyncconc.downloader._models import DownloadRequest
    from asyncconc.testing._fileserver import serve_files

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
    from asyncconc.downloader._cli import run_download
    from asyncconc.lessons._table import format_rows

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
    if code != 0 or args.no_lessons:
        return code
    print()
    print("The lesson's scenarios, the classic way beside the asyncconc way:")
    for title, rows in _lessons(quick=args.quick):
        print(f"{title}")
        print("\n".join(format_rows(rows)), flush=True)
    return 0


def _lessons(*, quick: bool) -> Iterator[tuple[str, list[Timing]]]:
    """Each non-GUI lesson, measured; small sizes when ``quick``."""
    from asyncconc.lessons import account, divide_and_conquer, downloads, gil, pingpong

    n_sum = 3_000_000 if quick else 100_000_000
    yield (
        "downloads (5 files, each answered after 0.5-1.0 s)"
        if not quick
        else "downloads (3 files, 0.1-0.2 s)",
        downloads.measure(3, min_delay=0.1, max_delay=0.2)
        if quick
        else downloads.measure(5, min_delay=0.5, max_delay=1.0),
    )
    deposits = 20 if quick else 100
    yield (
        f"account ({deposits} deposits of 1 at once)",
        account.measure(deposits, 0.005 if quick else 0.01),
    )
    yield "ping/pong (10 words in all)", pingpong.measure(10)
    n_gil = 1_000_000 if quick else 30_000_000
    yield f"GIL (1 + ... + {n_gil:,} in threads and processes)", gil.measure(n_gil)
    yield f"divide and conquer (1 + ... + {n_sum:,})", divide_and_conquer.measure(n_sum)
    from asyncconc.lessons import distributed

    if distributed.dask_available():  # the extra asyncconc[dask] is installed
        yield (
            f"distributed processes (1 + ... + {n_sum:,}: network queues, then Dask)",
            distributed.measure(n_sum),
        )
