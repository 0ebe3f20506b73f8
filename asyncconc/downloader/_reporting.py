"""Rendering download events for people: live progress, lines, summary, JSON.

A reporter is a callable taking :data:`DownloadEvent` values (the
downloader's ``on_event``), plus ``close()``. Three kinds:

* :class:`~asyncconc.downloader._live.LiveReporter` on a terminal: overall
  bytes, rate, ETA and files done/total, and a few per-file rows.
* :class:`LineReporter` when stdout is not a terminal: one line per finished
  file; with ``quiet`` only failures.
* Every run ends with :func:`summary_line`, and ``--report`` writes
  :func:`write_report`.

What is shown is text: every string that came from the list, the server or
the file system goes through :func:`~asyncconc._printable.printable`, so a
control character is shown as an escape (``\\x1b``) and acts on nothing.
Sizes and rates are IEC units (1 KiB = 1024 B), from :func:`format_bytes`
and :func:`format_rate` only.
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
from typing import Protocol, TextIO

from asyncconc._printable import printable
from asyncconc.downloader._models import (
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadResult,
    Status,
)

__all__ = [
    "LineReporter",
    "Reporter",
    "Tally",
    "format_bytes",
    "format_rate",
    "print_line",
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


def format_rate(bytes_per_second: float) -> str:
    """``1536.0`` -> ``'1.5 KiB/s'``: the one spelling of a rate, live and in the summary."""
    return f"{format_bytes(bytes_per_second)}/s"


@dataclass(slots=True)
class Tally:
    """Counts for the summary; fed by the same events as the display."""

    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    transferred: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def elapsed(self) -> float:
        """Seconds since the start, up to :meth:`stop` once it was called."""
        end = self.ended if self.ended is not None else time.monotonic()
        return max(end - self.started, 1e-9)

    def stop(self) -> None:
        """Freeze the clock, so the last live frame and the summary show one rate."""
        if self.ended is None:
            self.ended = time.monotonic()

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

    def count(self, statuses: Iterable[Status]) -> None:
        """Set the counts from the final statuses (one per line of the list)."""
        self.ok = self.skipped = self.failed = 0
        for status in statuses:
            if status == "ok":
                self.ok += 1
            elif status == "skipped":
                self.skipped += 1
            else:
                self.failed += 1


def summary_line(tally: Tally, *, interrupted: bool = False) -> str:
    elapsed = tally.elapsed
    rate = tally.transferred / elapsed
    head = "interrupted: " if interrupted else ""
    return (
        f"{head}{tally.ok} ok, {tally.skipped} skipped, {tally.failed} failed; "
        f"{format_bytes(tally.transferred)} in {elapsed:.2f} s ({format_rate(rate)})"
    )


def _line(result: DownloadResult) -> str:
    """One finished URL as plain text, every outside string made printable."""
    if result.status == "failed":
        return f"failed   {printable(result.url)}: {printable(result.error or '')}"
    where = printable(result.path) if result.path else "-"
    extra = f"  ({printable(result.note)})" if result.note else ""
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
