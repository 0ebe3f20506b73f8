"""The command line: ``python -m asyncconc COMMAND ...``.

Each command lives beside the code it drives, in a ``_cli`` module exposing
``register(subparsers)``; the parser it adds sets ``handler`` to a function
taking the parsed :class:`argparse.Namespace` and returning the exit code.
Those modules import only what their arguments need; the heavy imports
(aiohttp's server, rich, the pool) happen in the handler that uses them, so
``download`` does not pay for ``serve`` and start-up stays short.
:func:`main` returns that code instead of exiting, so tests call it directly;
:func:`run` (``python -m asyncconc`` and the console script) exits with it
through :func:`exit_now`.

Exit codes: 0 success, 1 a run with failures, 2 usage errors, 130 after
Ctrl-C or SIGTERM. A usage error prints, argparse style and with no
traceback, the usage line of the sub-command it belongs to and then one
``PROG COMMAND: error: MESSAGE`` line, on stderr; that holds for errors the
handlers find (a missing URLS_FILE) as well as for those argparse finds.
The program calls itself ``asyncconc`` when started as the console script
and ``python -m asyncconc`` otherwise.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from asyncconc._errors import UsageError
from asyncconc._printable import printable
from asyncconc._runner import LOOP_NAMES

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_loop_option",
    "build_parser",
    "exit_now",
    "int_at_least",
    "main",
    "run",
    "seconds",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# The sub-commands and the modules that add them, in the order `--help`
# lists them. A command line naming one of them builds only its parser:
# ``download`` does not import the pool's or the server's modules.
_COMMANDS = {
    "download": "asyncconc.downloader._cli",
    "serve": "asyncconc.testing._cli",
    "demo": "asyncconc._demo",
    "sum": "asyncconc.pool._cli",
}

Handler = Callable[[argparse.Namespace], int]


class _ArgumentError(UsageError):
    """A usage error that knows the parser (so the usage line) it belongs to."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() decides."""

    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(self, message)


def _prog_name() -> str:
    """``asyncconc`` for the console script, ``python -m asyncconc`` otherwise."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if name.removesuffix(".exe").removesuffix("-script.py") == "asyncconc":
        return "asyncconc"
    return "python -m asyncconc"


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


def build_parser(prog: str | None = None, *, only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` the parser of that one sub-command.

    ``only`` is for a command line that names its command first: the other
    commands' modules are not imported (``--help`` and errors about the
    command name itself need them all, and get them).
    """
    from asyncconc import __version__

    parser = _Parser(
        prog=prog or _prog_name(),
        description="asyncconc: concurrency lessons as an asyncio toolkit.",
    )
    parser.add_argument("--version", action="version", version=f"asyncconc {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    names = [only] if only in _COMMANDS else list(_COMMANDS)
    for name in names:
        importlib.import_module(_COMMANDS[name]).register(subparsers)
    parser.set_defaults(_commands=subparsers.choices)
    return parser


def _print_usage_error(parser: argparse.ArgumentParser, message: str) -> None:
    """argparse's own shape: the usage line(s), then ``PROG: error: MESSAGE``."""
    sys.stderr.write(f"{parser.format_usage()}{parser.prog}: error: {printable(message)}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=words[0] if words else None)
    command: argparse.ArgumentParser = parser
    try:
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit as exc:  # --help, --version: printed, done
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        command = args._commands.get(args.command, parser)
        if extra:
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        handler: Handler = args.handler
        return handler(args)
    except _ArgumentError as exc:
        _print_usage_error(exc.parser, str(exc))
        return EXIT_USAGE
    except UsageError as exc:
        # Raised by a handler: it belongs to the sub-command that ran.
        name = command.prog.rsplit(" ", 1)[-1]
        _print_usage_error(command, str(exc).removeprefix(f"{name}: "))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run() -> NoReturn:
    """``python -m asyncconc`` and the ``asyncconc`` console script."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the program with ``code``, skipping the interpreter's teardown.

    By the time a command returns, everything it opened is closed and its
    files are written; what Python's own exit would still do is free every
    object and module one by one, 40-80 ms after a download here (the gap
    between the last ``rename`` and ``exit_group`` under ``strace``), which
    is memory the kernel takes back at once. So the exit handlers are run
    (``atexit``: logging's flush, multiprocessing's reaping of children),
    stdout and stderr are flushed, and the process ends. The usual exit is
    taken while another thread still runs (it waits for the thread) and
    under a profiler or tracer (``python -m cProfile``, a debugger: they
    write their results once the program's code has returned).
    """
    threading = sys.modules.get("threading")
    others = threading is not None and threading.active_count() > 1
    if others or sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            # What Python's own exit reports for output it could not write.
            code = code or 120
    os._exit(code)
