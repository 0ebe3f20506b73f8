"""``python -m asyncconc serve DIR``: the loopback file server, standalone."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from asyncconc._errors import UsageError
from asyncconc._runner import run

__all__ = ["register"]


def register(subparsers: Any) -> None:
    from asyncconc.cli import add_loop_option, int_at_least, seconds
    from asyncconc.testing._static import DEFAULT_LIMITS

    parser = subparsers.add_parser(
        "serve",
        help="serve a folder over HTTP on loopback (Range support, optional delay)",
        description="Serve DIR over HTTP with Range support until Ctrl-C.",
    )
    parser.add_argument("dir", metavar="DIR", help="folder to serve")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int_at_least(0, 65535), default=0, help="port (default: 0, a free one)"
    )
    parser.add_argument(
        "--delay",
        type=seconds(allow_zero=True),
        default=0.0,
        metavar="SECONDS",
        help="wait this long before answering each request (default: 0)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=seconds(allow_zero=False),
        default=DEFAULT_LIMITS.idle_timeout,
        metavar="SECONDS",
        help="close a connection with no complete request for this long: silent, too "
        "slow sending headers, or idle between requests "
        f"(default: {DEFAULT_LIMITS.idle_timeout:g})",
    )
    parser.add_argument(
        "--max-header-size",
        type=int_at_least(256, 1 << 20),
        default=DEFAULT_LIMITS.max_field_size,
        metavar="BYTES",
        help="longest request line or header line; longer gets 400/431 "
        f"(default: {DEFAULT_LIMITS.max_field_size})",
    )
    parser.add_argument(
        "--max-connections",
        type=int_at_least(1),
        default=DEFAULT_LIMITS.max_connections,
        metavar="N",
        help="open connections at once; more are closed on arrival (default: "
        f"{DEFAULT_LIMITS.max_connections}, at most the descriptor limit less 64)",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="answer a folder's URL with an HTML index of its names (default: off, 404)",
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="honour the test kit's fault parameters (?status=, ?delay=, ...); "
        "off by default: a query string is ignored and the file is served",
    )
    add_loop_option(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise UsageError(f"DIR {args.dir!r}: no such folder")
    from asyncconc.testing._fileserver import serve_files
    from asyncconc.testing._static import ServeLimits

    limits = ServeLimits(
        idle_timeout=args.idle_timeout,
        max_line_size=args.max_header_size,
        max_field_size=args.max_header_size,
        max_connections=args.max_connections,
    )

    async def main() -> None:
        try:
            async with serve_files(
                root,
                host=args.host,
                port=args.port,
                delay=args.delay,
                faults=args.faults,
                limits=limits,
                listing=args.list,
            ) as server:
                print(f"serving {root} at {server.base_url}/ (Ctrl-C to stop)", flush=True)
                await asyncio.Event().wait()
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None

    run(main(), loop=args.loop)
    return 0  # not reached: only Ctrl-C/SIGTERM end the server


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m asyncconc serve DIR")
