"""``python -m asyncconc serve DIR``: the loopback file server, standalone."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from asyncconc._errors import UsageError
from asyncconc._runner import run

__all__ = ["register"]


def register(subparsers: Any) -> None:
    from asyncconc.cli import add_loop_option, int_at_least, seconds

    parser = subparsers.add_parser(
        "serve",
        help="serve a folder over HTTP on loopback (Range support, optional delay)",
        description="Serve DIR over HTTP until Ctrl-C: Range, If-Range and conditional "
        "requests (304), sendfile; GET and HEAD only; symlinks are not followed and nothing "
        "outside DIR is ever served.",
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
        "--faults",
        action="store_true",
        help="turn on the fault routes of the test kit (?fail=, ?delay=, ?location=, ...); "
        "off by default: the query string is ignored, as by any static server",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="answer a folder's URL (ending in /) with an HTML index of it (default: off)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=seconds(allow_zero=False),
        default=15.0,
        metavar="SECONDS",
        help="close a connection that has sent no complete request for this long since it "
        "was made or since its last response: idle keep-alive connections, silent sockets "
        "(default: 15)",
    )
    parser.add_argument(
        "--header-timeout",
        type=seconds(allow_zero=False),
        default=10.0,
        metavar="SECONDS",
        help="a request whose headers are not complete this long after its first byte gets "
        "408 and its connection is closed: clients dribbling headers (slowloris) (default: 10)",
    )
    parser.add_argument(
        "--send-timeout",
        type=seconds(allow_zero=False),
        default=60.0,
        metavar="SECONDS",
        help="abort a connection whose client has taken no byte of a response for this "
        "long: clients that stop reading (default: 60)",
    )
    parser.add_argument(
        "--max-header-size",
        type=int_at_least(256, 1 << 20),
        default=8190,
        metavar="BYTES",
        help="longest request line or header line; at most 100 headers (default: 8190)",
    )
    parser.add_argument(
        "--max-connections",
        type=int_at_least(1),
        default=512,
        metavar="N",
        help="open connections at once per process; more are closed on arrival "
        "(default: 512, at most the descriptor limit less 64)",
    )
    parser.add_argument(
        "--workers",
        type=int_at_least(1, 256),
        default=1,
        metavar="N",
        help="N server processes, each with its own event loop, accepting from one "
        "listening socket; a worker that dies is replaced (default: 1)",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    # A worker of --workers: serve on this inherited listening socket.
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    # For the measurement in docs/benchmarks-serve.md: one SO_REUSEPORT socket per worker.
    parser.add_argument(
        "--accept-queues",
        choices=("shared", "per-worker"),
        default="shared",
        help=argparse.SUPPRESS,
    )
    add_loop_option(parser)
    parser.set_defaults(handler=_handle)


class _OneLine(logging.Filter):
    """A refused request is one log line, not a traceback (``serve`` only).

    aiohttp logs a request it cannot parse (huge headers, garbage) with the
    parser's traceback; a server left running on a network gets those all
    day, so the command shows what was refused and why, in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _handle(args: argparse.Namespace) -> int:
    # This process is the command's own: configuring a library logger is fine here.
    logging.getLogger("aiohttp.server").addFilter(_OneLine())
    root = Path(args.dir)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "no such folder"
        raise UsageError(f"DIR {args.dir!r}: {what}")
    if args.workers > 1:
        return _supervise(args, root)
    from asyncconc.testing._fileserver import serve_files

    async def main() -> None:
        try:
            async with serve_files(
                root,
                host=args.host,
                port=args.port,
                delay=args.delay,
                history=0,  # a server left running keeps no per-request memory
                faults=args.faults,
                listing=args.list,
                idle_timeout=args.idle_timeout,
                header_timeout=args.header_timeout,
                send_timeout=args.send_timeout,
                max_field_size=args.max_header_size,
                reuse_port=args.reuse_port,
                max_connections=args.max_connections,
                sock=None if args.listen_fd is None else socket.socket(fileno=args.listen_fd),
            ) as server:
                print(f"serving {root} at {server.base_url}/ (Ctrl-C to stop)", flush=True)
                await asyncio.Event().wait()
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None

    run(main(), loop=args.loop)
    return 0  # not reached: only Ctrl-C/SIGTERM end the server


def _supervise(args: argparse.Namespace, root: Path) -> int:
    from asyncconc.testing._supervisor import listen_socket, reserve_port, supervise

    shared = args.accept_queues == "shared"
    holder = listen_socket(args.host, args.port) if shared else reserve_port(args.host, args.port)
    try:
        port = holder.getsockname()[1]
        argv = [
            "serve", str(root.resolve()), "--host", args.host, "--port", str(port),
            "--delay", str(args.delay), "--idle-timeout", str(args.idle_timeout),
            "--header-timeout", str(args.header_timeout),
            "--send-timeout", str(args.send_timeout),
            "--max-header-size", str(args.max_header_size), "--loop", args.loop,
            "--max-connections", str(args.max_connections),
        ]  # fmt: skip
        argv += ["--listen-fd", str(holder.fileno())] if shared else ["--reuse-port"]
        argv += ["--faults"] * args.faults + ["--list"] * args.list
        host = f"[{args.host}]" if ":" in args.host else args.host
        announce = (
            f"serving {root} at http://{host}:{port}/ with {args.workers} worker processes "
            "(Ctrl-C to stop)"
        )
        pass_fds = (holder.fileno(),) if shared else ()
        run(supervise(argv, args.workers, announce, pass_fds), loop=args.loop)
    finally:
        holder.close()
    return 0  # not reached: only Ctrl-C/SIGTERM end the server


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m asyncconc serve DIR")
