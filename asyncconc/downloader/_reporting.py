"""Rendering download events for people: live progress, lines, summary, JSON.

A reporter is a callable taking :data:`DownloadEvent` values (the
downloader's ``on_event``), plus ``close()``. Three kinds:

* :class:`LiveReporter` on a terminal: overall bytes, rate, ETA and files
  done/total, and one bar per active download (``rich``).
* :class:`LineReporter` when stdout is not a terminal: one line per finished
  file; with ``quiet`` only failures.
* Every run ends with :func:`summary_line`, and ``--report`` writes
  :func:`write_report`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

from asyncconc.downloader._models import (
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadResult,
    DownloadStarted,
)

__all__ = [
    "LineReporter",
    "print_line",
    "LiveReporter",
    "Reporter",
    "Tally",
    "format_bytes",
    "summary_line",
    "write_report",
]


class Reporter(Protocol):
    def __call__(self, event: DownloadEvent) -> None: ...

    def close(self) -> None: ...


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(slots=True)
class Tally:
    """Counts for the summary; fed by the same events as the display."""

    started: float = field(default_factory=time.monotonic)
    transferred: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0

    def __call__(self, event: DownloadEvent) -> None:
        if isinstance(event, DownloadProgress):
            self.transferred += event.nbytes
        elif isinstance(event, DownloadFinished):
            status = event.result.status
            if status == "ok":
                self.ok += 1
            elif status == "skipped":
                self.skipped += 1
            else:
                self.failed += 1

    def count(self, results: Iterable[DownloadResult]) -> None:
        """Set the counts from the final results (one per line of the list)."""
        self.ok = self.skipped = self.failed = 0
        for result in results:
            if result.status == "ok":
                self.ok += 1
            elif result.status == "skipped":
                self.skipped += 1
            else:
                self.failed += 1


def summary_line(tally: Tally, *, interrupted: bool = False) -> str:
    elapsed = max(time.monotonic() - tally.started, 1e-9)
    rate = tally.transferred / elapsed
    head = "interrupted: " if interrupted else ""
    return (
        f"{head}{tally.ok} ok, {tally.skipped} skipped, {tally.failed} failed; "
        f"{format_bytes(tally.transferred)} in {elapsed:.2f} s ({format_bytes(rate)}/s)"
    )


def _line(result: DownloadResult) -> str:
    where = result.path or "-"
    if result.status == "failed":
        return f"failed   {result.url}: {result.error}"
    extra = f"  ({result.note})" if result.note else ""
    return f"{result.status:<8} {format_bytes(result.bytes):>10}  {where}{extra}"


def print_line(stream: TextIO, text: str) -> None:
    """Print ``text``; if the reader went away (``| head``), print nothing more.

    A closed pipe must not abort the downloads or end in a traceback: the
    stream is pointed at /dev/null, so later prints (and the flush at exit)
    succeed silently, while the files and the exit code stay what they are.
    """
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


class LineReporter:
    """One line per finished download (only failures when ``quiet``)."""

    def __init__(self, stream: TextIO, *, quiet: bool = False) -> None:
        self._stream = stream
        self._quiet = quiet

    def __call__(self, event: DownloadEvent) -> None:
        if isinstance(event, DownloadFinished):
            result = event.result
            if not self._quiet or result.status == "failed":
                print_line(self._stream, _line(result))

    def close(self) -> None:
        pass


class LiveReporter:
    """A live display: overall progress plus one bar per active download."""

    def __init__(self, console: Console, *, total_files: int) -> None:
        # rich costs ~30 ms to import: only the live display pays for it.
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            refresh_per_second=8,
        )
        self._total_files = total_files
        self._done = 0
        self._known_total = 0
        self._overall = self._progress.add_task(self._overall_text(), total=None)
        self._active: dict[str, TaskID] = {}
        self._moved: dict[str, int] = {}
        self._expected: dict[str, int] = {}
        self._progress.start()

    def _overall_text(self) -> str:
        return f"[bold]all[/] {self._done}/{self._total_files} files"

    def __call__(self, event: DownloadEvent) -> None:
        progress = self._progress
        if isinstance(event, DownloadProgress):
            progress.advance(self._overall, event.nbytes)
            self._moved[event.url] = self._moved.get(event.url, 0) + event.nbytes
            task = self._active.get(event.url)
            if task is not None:
                progress.advance(task, event.nbytes)
        elif isinstance(event, DownloadStarted):
            old = self._active.pop(event.url, None)
            if old is not None:  # a restart: forget the old bar
                progress.remove_task(old)
            if event.total is not None:
                # Bytes this URL will have moved in this run: what it already
                # moved (before a retry) plus what is left to fetch.
                expected = self._moved.get(event.url, 0) + event.total - event.resumed_from
                self._known_total += expected - self._expected.get(event.url, 0)
                self._expected[event.url] = expected
                progress.update(self._overall, total=self._known_total)
            name = event.path if len(event.path) <= 40 else "…" + event.path[-39:]
            self._active[event.url] = progress.add_task(
                name, total=event.total, completed=event.resumed_from
            )
        elif isinstance(event, DownloadFinished):
            self._done += 1
            self._moved.pop(event.result.url, None)
            self._expected.pop(event.result.url, None)
            task = self._active.pop(event.result.url, None)
            if task is not None:
                progress.remove_task(task)
            progress.update(self._overall, description=self._overall_text())
            if event.result.status == "failed":
                progress.console.print(f"[red]failed[/] {event.result.url}: {event.result.error}")

    def close(self) -> None:
        self._progress.stop()


def write_report(path: str | os.PathLike[str], results: Iterable[DownloadResult]) -> None:
    """Write the JSON report atomically (temp file + rename)."""
    target = Path(path)
    data = json.dumps([r.as_dict() for r in results], indent=2, ensure_ascii=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
