"""``python -m asyncconc serve DIR``: the loopback file server, standalone."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from asyncconc._errors import UsageError
from asyncconc._runner import run
from asyncconc.testing._fileserver import serve_files

__all__ = ["register"]


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 65535")
    return value


def register(subparsers: Any) -> None:
    from asyncconc.cli import add_loop_option

    parser = subparsers.add_parser(
        "serve",
        help="serve a folder over HTTP on loopback (Range support, optional delay)",
        description="Serve DIR over HTTP with Range support until Ctrl-C.",
    )
    parser.add_argument("dir", metavar="DIR", help="folder to serve")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=_port, default=0, help="port (default: 0, a free one)")
    parser.add_argument(
        "--delay",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before answering each request (default: 0)",
    )
    add_loop_option(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise UsageError(f"DIR {args.dir!r}: no such folder")

    async def main() -> None:
        try:
            async with serve_files(
                root, host=args.host, port=args.port, delay=args.delay
            ) as server:
                print(f"serving {root} at {server.base_url}/ (Ctrl-C to stop)", flush=True)
                await asyncio.Event().wait()
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None

    run(main(), loop=args.loop)
    return 0  # not reached: only Ctrl-C/SIGTERM end the server


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m asyncconc serve DIR")
