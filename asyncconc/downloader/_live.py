"""The live display on a terminal: one overall line and a few per-file rows.

Why not ``rich.progress``: every ``add_task`` redraws the whole display
synchronously, and every change of a task's total resets its speed samples.
On a 10,000-line list that cost 31 s of CPU against 3 s for a piped run,
and the overall rate and ETA read ``?`` for most of the run. Here an event
only updates a few counters (O(1), no drawing); a frame is drawn by a timer
on the event loop, :data:`REFRESH` times a second, and its cost depends on
the terminal's size, not on the list's length.

A frame is plain text: every string from the list, the server or the file
system goes through :func:`~asyncconc._printable.printable`, and nothing is
interpreted as markup. Each line is cut to the width minus one (so the
terminal never wraps it); columns are dropped as the terminal narrows (see
:func:`overall_line` and :func:`file_row`); at most :data:`MAX_FILE_ROWS`
per-file rows are shown, fewer on a short terminal. Before each frame the
previous one is erased from its first line down (``ESC [ J``); after a
resize the terminal may have re-wrapped the old frame's lines, so the number
of rows to go up is counted at the new width.

Rates are bytes over wall-clock time, in IEC units (KiB = 1024 B), through
:func:`~asyncconc.downloader._reporting.format_rate`: the live rate over
the last :data:`RATE_WINDOW` seconds, the final frame and the summary over
the whole run, from the same :class:`~asyncconc.downloader._reporting.Tally`.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from rich.cells import cell_len

from asyncconc._printable import printable
from asyncconc.downloader._models import (
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadStarted,
)
from asyncconc.downloader._reporting import Tally, format_bytes, format_rate

__all__ = ["LiveReporter", "file_row", "overall_line"]

REFRESH = 8  # frames per second
RATE_WINDOW = 5.0  # seconds of samples behind the live rate
MAX_FILE_ROWS = 8

_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"
_ERASE_DOWN = "\x1b[J"


class _Glyphs:
    def __init__(self, encoding: str | None) -> None:
        try:
            "━─…".encode(encoding or "ascii")
        except (LookupError, UnicodeEncodeError):
            self.done, self.todo, self.more = "#", "-", "..."
        else:
            self.done, self.todo, self.more = "━", "─", "…"


def _clip(text: str, width: int, more: str = "…") -> str:
    """``text`` cut to ``width`` cells, keeping its end (a name's extension)."""
    if cell_len(text) <= width:
        return text
    room = width - cell_len(more)
    if room <= 0:
        return more[:width]
    kept: list[str] = []
    used = 0
    for char in reversed(text):
        size = cell_len(char)
        if used + size > room:
            break
        kept.append(char)
        used += size
    return more + "".join(reversed(kept))


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - cell_len(text))


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _bar(fraction: float | None, width: int, glyphs: _Glyphs) -> str:
    if fraction is None:
        return glyphs.todo * width
    filled = min(width, int(fraction * width))
    return glyphs.done * filled + glyphs.todo * (width - filled)


def overall_line(
    *,
    done: int,
    total_files: int,
    transferred: int,
    rate: float | None,
    eta: float | None,
    elapsed: float | None,
    width: int,
    glyphs: _Glyphs | None = None,
) -> str:
    """The overall line, fitted to ``width`` cells (the terminal's width minus one).

    Widest first: ``all``, files done/total, a bar of files done, bytes,
    rate, ETA (or ``in`` and the elapsed time on the final frame). Below 70
    cells the bar and ``all`` go, below 40 the bytes, below 24 the words.
    """
    glyphs = glyphs or _Glyphs("utf-8")
    speed = format_rate(rate) if rate is not None else "? B/s"
    if elapsed is not None:
        when = f"in {elapsed:.2f} s" if elapsed < 60 else f"in {_duration(elapsed)}"
    else:
        when = f"ETA {_duration(eta)}" if eta is not None else "ETA -:--:--"
    files = f"{done}/{total_files} files"
    size = format_bytes(transferred)
    if width >= 70:
        bar = _bar(done / total_files if total_files else 1.0, min(30, width // 5), glyphs)
        text = f"all {files}  {bar}  {size}  {speed}  {when}"
    elif width >= 40:
        text = f"{files}  {size}  {speed}  {when}"
    elif width >= 24:
        text = f"{done}/{total_files}  {speed}  {when.removeprefix('ETA ')}"
    else:
        text = f"{done}/{total_files} {speed}"
    return _clip(text, width, glyphs.more) if cell_len(text) > width else text


def file_row(
    name: str,
    got: int,
    total: int | None,
    *,
    name_width: int,
    width: int,
    glyphs: _Glyphs | None = None,
) -> str:
    """One active download, fitted to ``width`` cells; ``name`` is already printable.

    The name column is ``name_width`` cells (cut from the left, keeping the
    extension); then, while they fit, a bar, the percentage and
    ``got/total``. Below 70 cells the bar goes, below 50 the total, below
    25 everything but the name and the percentage.
    """
    glyphs = glyphs or _Glyphs("utf-8")
    fraction = got / total if total else None
    pct = f"{100 * fraction:3.0f}%" if fraction is not None else "   ?"
    if width >= 70:
        right = f"{_bar(fraction, min(30, width // 5), glyphs)} {pct} " + (
            f"{format_bytes(got)}/{format_bytes(total) if total is not None else '?'}".rjust(21)
        )
    elif width >= 50:
        right = f"{pct} " + (
            f"{format_bytes(got)}/{format_bytes(total) if total is not None else '?'}".rjust(21)
        )
    elif width >= 25:
        right = f"{pct} {format_bytes(got):>10}"
    else:
        right = pct
    room = max(1, min(name_width, width - len(right) - 1))
    return _clip(f"{_pad(_clip(name, room, glyphs.more), room)} {right}", width, glyphs.more)


class _Active:
    __slots__ = ("got", "name", "total")

    def __init__(self, name: str, got: int, total: int | None) -> None:
        self.name = name
        self.got = got
        self.total = total


class LiveReporter:
    """The live display (see the module's docstring).

    ``tally`` must be fed each event before this reporter (the CLI does):
    the bytes and the clock shown are the tally's, so the final frame and
    the summary agree. ``size`` (columns, lines) defaults to the terminal's,
    read at every frame; ``clock`` is for the live rate (tests pass a fake).
    Frames are drawn by a timer on the running event loop, if any;
    :meth:`draw` draws one now, and :meth:`close` draws the last one,
    restores the cursor and stops the timer. Writing stops quietly if the
    terminal goes away.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        total_files: int,
        tally: Tally,
        color: bool | None = None,
        size: Callable[[], tuple[int, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._tally = tally
        self._total_files = total_files
        self._fixed_size = size
        self._clock = clock
        self._glyphs = _Glyphs(getattr(stream, "encoding", None))
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._color = (not os.environ.get("NO_COLOR")) if color is None else color
        self._done = 0
        self._known_total = 0
        self._sized = 0  # URLs whose size is known
        self._moved: dict[str, int] = {}
        self._expected: dict[str, int] = {}
        self._active: dict[str, _Active] = {}
        self._messages: list[str] = []
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])
        self._last_frame: list[int] = []  # the cell length of each line drawn
        self._closed = False
        self._gone = False  # the terminal went away: draw nothing more
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._schedule()

    # -- events: counters only ----------------------------------------------------------

    def __call__(self, event: DownloadEvent) -> None:
        if isinstance(event, DownloadProgress):
            self._moved[event.url] = self._moved.get(event.url, 0) + event.nbytes
            active = self._active.get(event.url)
            if active is not None:
                active.got += event.nbytes
        elif isinstance(event, DownloadStarted):
            if event.total is not None:
                # Bytes this URL will have moved in this run: what it already
                # moved (before a retry) plus what is left to fetch.
                expected = self._moved.get(event.url, 0) + event.total - event.resumed_from
                if event.url not in self._expected:
                    self._sized += 1
                self._known_total += expected - self._expected.get(event.url, 0)
                self._expected[event.url] = expected
            self._active[event.url] = _Active(
                printable(event.path), event.resumed_from, event.total
            )
        elif isinstance(event, DownloadFinished):
            result = event.result
            self._done += 1
            self._moved.pop(result.url, None)
            self._expected.pop(result.url, None)
            self._active.pop(result.url, None)
            if result.status == "failed":
                url, error = printable(result.url), printable(result.error or "")
                self._messages.append(f"{self._red('failed')} {url}: {error}")

    # -- drawing ------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._loop is not None and not self._closed:
            self._timer = self._loop.call_later(1 / REFRESH, self._tick)

    def _tick(self) -> None:
        self.draw()
        self._schedule()

    def _size(self) -> tuple[int, int]:
        if self._fixed_size is not None:
            return self._fixed_size()
        try:
            columns, lines = os.get_terminal_size(self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            columns = lines = 0
        if columns <= 0:
            columns = _env_int("COLUMNS", 80)
        if lines <= 0:
            lines = _env_int("LINES", 24)
        return columns, lines

    def _red(self, text: str) -> str:
        return f"\x1b[31m{text}\x1b[39m" if self._color else text

    def _rate(self, now: float) -> float | None:
        transferred = self._tally.transferred
        samples = self._samples
        samples.append((now, transferred))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        then, before = samples[0]
        if now - then < 0.1:
            return None
        return (transferred - before) / (now - then)

    def _eta(self, rate: float | None) -> float | None:
        """Seconds left at ``rate``: the bytes known, plus a guess for the files
        not started yet (the average size of the files whose size is known)."""
        if not rate or rate <= 0:
            return None
        not_started = max(0, self._total_files - self._done - len(self._active))
        estimate = float(self._known_total)
        if not_started and self._sized:
            estimate += not_started * self._known_total / self._sized
        return max(0.0, estimate - self._tally.transferred) / rate

    def frame(self, columns: int, lines: int, *, final: bool = False) -> list[str]:
        """The lines of one frame for a ``columns`` x ``lines`` terminal (plain text)."""
        width = max(1, columns - 1)
        rate = self._rate(self._clock())
        elapsed = None
        if final:
            elapsed = self._tally.elapsed
            rate = self._tally.transferred / elapsed if elapsed > 0 else None
        out = [
            overall_line(
                done=self._done,
                total_files=self._total_files,
                transferred=self._tally.transferred,
                rate=rate,
                eta=None if final else self._eta(rate),
                elapsed=elapsed,
                width=width,
                glyphs=self._glyphs,
            )
        ]
        if final:
            return out
        rows = max(0, min(MAX_FILE_ROWS, lines - 3, len(self._active)))
        if rows and rows < len(self._active):
            rows -= 1  # room for the "and N more" line
        shown = list(self._active.values())[:rows] if rows else []
        name_width = max((cell_len(a.name) for a in shown), default=0)
        name_width = min(name_width, max(8, width // 2))
        for active in shown:
            out.append(
                file_row(
                    active.name,
                    active.got,
                    active.total,
                    name_width=name_width,
                    width=width,
                    glyphs=self._glyphs,
                )
            )
        hidden = len(self._active) - len(shown)
        if hidden > 0 and lines - 3 > 0:
            out.append(_clip(f"{self._glyphs.more} and {hidden} more downloading", width))
        return out

    def draw(self, *, final: bool = False) -> None:
        """Draw one frame now (and any failure lines above it)."""
        if self._gone:
            return
        columns, lines = self._size()
        text: list[str] = []
        if self._last_frame:
            # Rows the last frame takes now: more if a narrower terminal re-wrapped it.
            used = sum(max(1, math.ceil(n / columns)) for n in self._last_frame)
            text.append("\r" + (f"\x1b[{used - 1}A" if used > 1 else "") + _ERASE_DOWN)
        else:
            text.append(_HIDE_CURSOR)
        text.extend(message + "\n" for message in self._messages)
        self._messages.clear()
        frame = self.frame(columns, lines, final=final)
        text.append("\n".join(frame))
        if final:
            text.append("\n" + _SHOW_CURSOR)
        self._last_frame = [] if final else [cell_len(line) for line in frame]
        data = "".join(text).encode(self._encoding, "backslashreplace").decode(self._encoding)
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):
            self._gone = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.draw(final=True)


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default
