"""``python -m asyncconc download URLS_FILE``: the main job.

Bad input is a :class:`UsageError` raised before any network or file work,
so a typo never leaves half a run behind. Once the run starts, per-URL
problems (including invalid lines) are results: they are reported and make
the exit code 1, while the other lines still download.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from asyncconc._errors import UsageError
from asyncconc._printable import printable
from asyncconc._runner import run
from asyncconc.downloader._models import (
    DownloadEvent,
    DownloadRequest,
    DownloadResult,
    Status,
    has_url_lines,
    parse_url_list,
)
from asyncconc.downloader._reporting import (
    LineReporter,
    Reporter,
    Tally,
    print_line,
    summary_line,
    write_report,
)

__all__ = ["register", "run_download"]


def register(subparsers: Any) -> None:
    from asyncconc.cli import add_loop_option, int_at_least, seconds

    parser = subparsers.add_parser(
        "download",
        help="download many files at once over HTTP",
        usage="%(prog)s [options] URLS_FILE",
        description=(
            "Download every URL of URLS_FILE concurrently. Lines: URL [NAME] [sha256=HEX] "
            "[# comment]; blank lines and lines starting with # are ignored; '-' reads stdin. "
            "Data goes to NAME.part and is renamed when complete; existing files are "
            "skipped and .part files resumed."
        ),
    )
    parser.add_argument("urls_file", metavar="URLS_FILE", help="file with one URL per line, or -")
    parser.add_argument(
        "-o", "--output", metavar="DIR", default=".", help="output folder (default: .)"
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=int_at_least(1),
        default=16,
        metavar="N",
        help="downloads in flight at once (default: 16)",
    )
    parser.add_argument(
        "--per-host",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="connections per host at once (default: no extra limit)",
    )
    parser.add_argument(
        "--retries",
        type=int_at_least(0),
        default=3,
        metavar="N",
        help="retries per URL on transient errors (default: 3)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds(allow_zero=False),
        default=30.0,
        metavar="SECONDS",
        help="connect and idle-read timeout; a moving transfer never times out (default: 30)",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'K: V'",
        help="extra request header (repeatable; not Range, which resuming sets)",
    )
    parser.add_argument(
        "--workers",
        type=int_at_least(1),
        default=None,
        metavar="W",
        help="shard the list over W worker processes, each with its own event loop "
        "(default: one process)",
    )
    parser.add_argument(
        "--split",
        type=int_at_least(1, 64),
        default=1,
        metavar="N",
        help="fetch each file of 2 MiB or more in up to N Range segments at once, "
        "when the server allows (default: 1)",
    )
    parser.add_argument("--overwrite", action="store_true", help="download files that exist")
    parser.add_argument(
        "--update",
        action="store_true",
        help="re-check files saved by an earlier run (If-None-Match / If-Modified-Since) "
        "and download again only those that changed",
    )
    parser.add_argument("--no-resume", action="store_true", help="restart .part files from zero")
    parser.add_argument("--report", metavar="FILE.json", help="write a JSON report of every URL")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only failures and the summary"
    )
    add_loop_option(parser)
    parser.set_defaults(handler=_handle)


_OWN_HEADERS = frozenset({"range", "if-range"})


def _parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        name = name.strip()
        if not sep or not name or any(c.isspace() or ord(c) < 33 for c in name):
            raise UsageError(f"--header {value!r}: expected 'Name: value'")
        if any(c in content for c in "\r\n\x00"):
            raise UsageError(f"--header {value!r}: the value may not contain line breaks")
        if name.lower() in _OWN_HEADERS:
            # A fixed Range would fight resuming (.part files ask for the rest)
            # and make every file a fragment: refused, like an unknown option.
            raise UsageError(
                f"--header {value!r}: {name} is set by the downloader "
                "(to resume .part files) and cannot be given"
            )
        headers[name] = content.strip()
    return headers


def _read_lines(source: str) -> list[str]:
    if source == "-":
        binary = getattr(sys.stdin, "buffer", None)
        if binary is None:  # a text stream put in place of stdin (tests, embedding)
            return sys.stdin.read().splitlines()
        data: bytes = binary.read()
        try:
            return data.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"URLS_FILE '-' (stdin): not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
    try:
        return Path(source).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"URLS_FILE {source!r}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"URLS_FILE {source!r}: is a folder, not a file") from None
    except PermissionError:
        raise UsageError(f"URLS_FILE {source!r}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"URLS_FILE {source!r}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise UsageError(f"URLS_FILE {source!r}: {exc.strerror}") from None


def _prepare_output(folder: str) -> Path:
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"-o {folder!r}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"-o {folder!r}: cannot create the folder ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"-o {folder!r}: the folder is not writable")
    return path


def _check_report_path(report: str | None) -> None:
    if report is None:
        return
    path = Path(report)
    if path.is_dir():
        raise UsageError(f"--report {report!r}: is a folder")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"--report {report!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--report {report!r}: folder {str(parent)!r} is not writable")


def _handle(args: argparse.Namespace) -> int:
    headers = _parse_headers(args.header)
    _check_report_path(args.report)
    lines = _read_lines(args.urls_file)  # a bad URLS_FILE: no folder made
    dest = _prepare_output(args.output)
    if not has_url_lines(lines):
        # Nothing to do is not a failure (wget -i says the same and exits 0).
        where = "stdin" if args.urls_file == "-" else args.urls_file
        print_line(sys.stdout, f"no URLs in {printable(where)}")
        if args.report is not None:
            write_report(args.report, [])
        return 0
    # With --workers the list is parsed on the run's loop, while the pool's
    # fork server starts (see run_download); the text of the list is not kept
    # for the run either way (~90 B a line).
    held = [lines]
    # The pool starts before the shards are known: no more processes than
    # lines, unless the segments of a --split file are spread over them all.
    workers = args.workers
    if workers is not None and args.split <= 1:
        workers = min(workers, len(lines))
    del lines

    async def parse(stack: contextlib.AsyncExitStack) -> list[DownloadRequest]:
        return list(parse_url_list(held.pop()))

    return run_download(
        parse if workers is not None else list(parse_url_list(held.pop())),
        dest,
        loop=args.loop,
        quiet=args.quiet,
        report=args.report,
        stdout=sys.stdout,
        workers=workers,
        options={
            "concurrency": args.jobs,
            "per_host": args.per_host,
            "retries": args.retries,
            "timeout": args.timeout,
            "headers": headers,
            "overwrite": args.overwrite,
            "resume": not args.no_resume,
            "update": args.update,
            # The sha256 of every file is only shown in the report; hashing
            # costs about a quarter of the CPU of a large download.
            "checksum": args.report is not None,
            "split": args.split,
        },
    )


def _make_reporter(stdout: Any, *, quiet: bool, total: int, tally: Tally) -> Reporter:
    if not quiet and stdout.isatty():
        from asyncconc.downloader._live import LiveReporter  # only for the live display

        return LiveReporter(stdout, total_files=total, tally=tally)
    return LineReporter(stdout, quiet=quiet)


_NOT_STARTED = "not started (interrupted)"


def _fit_open_file_limit(options: dict[str, Any], workers: int | None) -> None:
    """Raise the soft open-file limit to the hard one; say so if -j must shrink.

    The downloader itself lowers its concurrency to what the limit allows
    (EMFILE is back-pressure, never a failure); this is the one line that
    tells the user why the run is less parallel than asked.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX: no such limit
        return
    from asyncconc.downloader._limits import fd_concurrency, raise_open_file_limit

    raise_open_file_limit()
    jobs = int(options.get("concurrency", 16))
    shards = max(1, workers or 1)
    per_process = -(-jobs // shards)
    allowed = fd_concurrency(per_process)
    if allowed < per_process:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        where = " per worker process" if workers else ""
        print_line(
            sys.stderr,
            f"note: -j {jobs} lowered to {allowed} downloads at once{where}: "
            f"the open-file limit is {soft} (ulimit -n)",
        )


RequestSource = Callable[[contextlib.AsyncExitStack], Awaitable[list[DownloadRequest]]]


def run_download(
    source: list[DownloadRequest] | RequestSource,
    dest: Path,
    *,
    loop: str = "auto",
    quiet: bool = False,
    report: str | None = None,
    stdout: Any = None,
    options: dict[str, Any] | None = None,
    workers: int | None = None,
) -> int:
    """Run a whole download from the CLI's point of view; return the exit code.

    Shared by ``download`` and ``demo``. ``source`` is the list of requests,
    or an async callable producing it on the run's loop (the demo starts its
    server there, on the given exit stack). On Ctrl-C/SIGTERM the downloads
    are cancelled (``.part`` files kept), the URLs that did not finish are
    reported as failed, and 130 is returned.
    """
    out = stdout if stdout is not None else sys.stdout
    tally = Tally()
    requests: list[DownloadRequest] = source if isinstance(source, list) else []
    # A finished line's result, or only its status when no report is written
    # (the summary and the exit code need no more): ~300 B a line less.
    finished: dict[int, DownloadResult | Status] = {}
    keep = report is not None
    # What was in flight when the run was interrupted, as it was left.
    cut: dict[int, DownloadResult] = {}
    reporter: Reporter | None = None

    _fit_open_file_limit(options or {}, workers)
    from asyncconc._malloc import tune_for_streaming  # ctypes: not for an empty list

    tune_for_streaming()  # this process is the command line's own

    async def main() -> None:
        nonlocal reporter, requests
        async with contextlib.AsyncExitStack() as stack:
            pool = None
            if workers is not None and not isinstance(source, list):
                # The pool starts first: its fork server (a new interpreter
                # importing the downloader, ~0.2 s) runs on another core while
                # this process makes the list. Measured: 20,000 lines take
                # 0.25-0.4 s, which the first downloads waited for.
                import asyncio  # loaded by now (the run's loop); not for an empty list

                from asyncconc.downloader._sharded import worker_pool

                pool = worker_pool(workers, loop)
                starting = asyncio.ensure_future(stack.enter_async_context(pool))
                await asyncio.sleep(0)  # the fork server is spawned
                try:
                    requests = await source(stack)
                except BaseException:
                    starting.cancel()  # a pool already entered is on the stack
                    await asyncio.wait({starting})
                    if not starting.cancelled():
                        starting.exception()  # retrieved: the first error is the one raised
                    raise
                await starting
            elif not isinstance(source, list):
                requests = await source(stack)
            shown = _make_reporter(out, quiet=quiet, total=len(requests), tally=tally)
            reporter = shown
            if not requests:
                return  # nothing to fetch: aiohttp (~0.1 s of imports) is never loaded

            def on_event(event: DownloadEvent) -> None:
                tally(event)
                shown(event)

            if workers is not None:
                from asyncconc.downloader._sharded import run_sharded

                items = run_sharded(
                    requests,
                    dest,
                    workers=workers,
                    on_event=on_event,
                    options=options or {},
                    loop=loop,
                    leftover=cut.__setitem__,
                    pool=pool,
                )
                async with contextlib.aclosing(items):
                    async for index, result in items:
                        finished[index] = result if keep else result.status
                return
            from asyncconc.downloader._pipeline import Downloader

            downloader = Downloader(dest, on_event=on_event, **(options or {}))
            async with (
                downloader,
                contextlib.aclosing(downloader._run(requests, leftover=cut.__setitem__)) as items,
            ):
                async for index, result in items:
                    finished[index] = result if keep else result.status

    interrupted = False
    try:
        run(main(), loop=loop)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        tally.stop()
        if reporter is not None:
            with contextlib.suppress(Exception):
                reporter.close()
    results = [
        finished.get(i) or cut.get(i) or DownloadResult.unfinished(request, _NOT_STARTED)
        for i, request in enumerate(requests)
    ]
    statuses = [r if isinstance(r, str) else r.status for r in results]
    # The counts come from the results (one per line), not from the events:
    # after an interrupt some results were never announced by an event.
    tally.count(statuses)
    print_line(out, summary_line(tally, interrupted=interrupted))
    if report is not None:
        write_report(report, [r for r in results if not isinstance(r, str)])
    if interrupted:
        return 130
    return 1 if "failed" in statuses else 0
