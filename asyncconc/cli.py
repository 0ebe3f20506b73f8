"""The command line: ``python -m asyncconc COMMAND ...``.

Each command lives beside the code it drives, in a ``_cli`` module exposing
``register(subparsers)``; the parser it adds sets ``handler`` to a function
taking the parsed :class:`argparse.Namespace` and returning the exit code.
Those modules import only what their arguments need; the heavy imports
(aiohttp's server, rich, the pool) happen in the handler that uses them, so
``download`` does not pay for ``serve`` and start-up stays short.
:func:`main` returns that code instead of exiting, so tests call it directly.

Exit codes: 0 success, 1 a run with failures, 2 usage errors (one line on
stderr, no traceback), 130 after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from asyncconc._errors import UsageError
from asyncconc._runner import LOOP_NAMES

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_loop_option",
    "build_parser",
    "int_at_least",
    "main",
    "seconds",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Modules that add sub-commands, in the order `--help` lists them.
_COMMAND_MODULES = (
    "asyncconc.downloader._cli",
    "asyncconc.testing._cli",
    "asyncconc._demo",
    "asyncconc.pool._cli",
)

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() decides."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} is more than {maximum}")
        return value

    return parse


def seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, > 0 (or >= 0)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
            least = "0 or more" if allow_zero else "a positive number of"
            raise argparse.ArgumentTypeError(f"{text!r} must be {least} seconds")
        return value

    return parse


def add_loop_option(parser: argparse.ArgumentParser) -> None:
    """``--loop auto|uvloop|asyncio``, shared by every command."""
    parser.add_argument(
        "--loop",
        choices=LOOP_NAMES,
        default="auto",
        help="event loop: uvloop when installed (auto), or force one (default: auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m asyncconc",
        description="asyncconc: concurrency lessons as an asyncio toolkit.",
    )
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Handler = args.handler
        return handler(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
