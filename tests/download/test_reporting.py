"""What people see: the live display on a terminal, lines otherwise, the summary."""

from __future__ import annotations

import io
import math
import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len

from asyncconc import DownloadFinished, DownloadProgress, DownloadResult, DownloadStarted
from asyncconc._printable import printable
from asyncconc.downloader._live import LiveReporter, file_row, overall_line
from asyncconc.downloader._reporting import (
    LineReporter,
    Tally,
    format_bytes,
    format_rate,
    summary_line,
)

_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _result(
    status: str = "ok",
    error: str | None = None,
    *,
    url: str = "http://h/a.bin",
    path: str | None = "a.bin",
) -> DownloadResult:
    return DownloadResult(
        url=url,
        path=path,
        status=status,  # type: ignore[arg-type]
        bytes=10,
        sha256="0" * 64 if status == "ok" else None,
        attempts=1,
        error=error,
        seconds=0.1,
    )


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- printable ---------------------------------------------------------------------------------


@given(st.text(st.characters(codec=None)))
def test_printable_leaves_no_character_a_terminal_acts_on(text: str) -> None:
    shown = printable(text)
    assert not any(_unsafe(c) for c in shown)
    assert printable(shown) == shown  # a second pass changes nothing


@given(st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))))
def test_printable_keeps_ordinary_text_as_it_is(text: str) -> None:
    text = "".join(c for c in text if c not in _BIDI)
    assert printable(text) == text


def test_printable_spells_controls_as_escapes() -> None:
    assert printable("\x1b[2J\x1b[Hok\n") == "\\x1b[2J\\x1b[Hok\\x0a"
    assert printable("abc\u202etxt.exe") == "abc\\u202etxt.exe"
    assert printable("caf\xe9 \x9b") == "caf\xe9 \\x9b"
    # A byte that was not UTF-8, kept by surrogateescape, shows as the byte.
    assert printable(b"n\xffame".decode("utf-8", "surrogateescape")) == "n\\xffame"
    assert printable("[red]b.bin [/x]") == "[red]b.bin [/x]"


# -- lines and summary ---------------------------------------------------------------------------


def test_line_reporter_prints_one_line_per_file_and_quiet_only_failures() -> None:
    loud, quiet = io.StringIO(), io.StringIO()
    for stream, is_quiet in ((loud, False), (quiet, True)):
        reporter = LineReporter(stream, quiet=is_quiet)
        reporter(DownloadProgress("http://h/a.bin", 10))
        reporter(DownloadFinished(_result()))
        reporter(DownloadFinished(_result("failed", "HTTP 404 Not Found")))
    assert len(loud.getvalue().splitlines()) == 2
    assert quiet.getvalue().splitlines() == ["failed   http://h/a.bin: HTTP 404 Not Found"]


def test_line_reporter_shows_outside_text_literally() -> None:
    stream = io.StringIO()
    reporter = LineReporter(stream)
    reporter(DownloadFinished(_result(path="x[/y]\x1b[31m.bin")))
    reporter(
        DownloadFinished(
            _result("failed", "line 1: bad\x07 \u202e", url="\x1b[2J\x1b[H\x1b[32mALL", path=None)
        )
    )
    out = stream.getvalue()
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\u202e" not in out
    assert "x[/y]\\x1b[31m.bin" in out
    assert "failed   \\x1b[2J\\x1b[H\\x1b[32mALL: line 1: bad\\x07 \\u202e" in out


def test_summary_counts_statuses_and_bytes() -> None:
    tally = Tally()
    tally(DownloadProgress("u", 2048))
    for status in ("ok", "ok", "skipped", "failed"):
        tally(DownloadFinished(_result(status)))
    line = summary_line(tally)
    assert line.startswith("2 ok, 1 skipped, 1 failed; 2.0 KiB in ")


def test_sizes_and_rates_are_iec() -> None:
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(670_000_000) == "639.0 MiB"
    assert format_rate(3 * 1024**2) == "3.0 MiB/s"


# -- the live display ----------------------------------------------------------------------------


def _live(
    *,
    total_files: int,
    columns: int = 100,
    lines: int = 24,
    clock: FakeClock | None = None,
) -> tuple[LiveReporter, Tally, io.StringIO, list[tuple[int, int]]]:
    clock = clock or FakeClock()
    tally = Tally(started=clock.now)
    stream = io.StringIO()
    size = [(columns, lines)]
    live = LiveReporter(
        stream, total_files=total_files, tally=tally, size=lambda: size[0], clock=clock
    )
    return live, tally, stream, size


def _feed(live: LiveReporter, tally: Tally, *events: object) -> None:
    for event in events:
        tally(event)  # type: ignore[arg-type]
        live(event)  # type: ignore[arg-type]


def test_live_reporter_counts_a_resumed_retry_once() -> None:
    live, tally, stream, _ = _live(total_files=1)
    _feed(
        live,
        tally,
        DownloadStarted("http://h/a.bin", "a.bin", 1000, 0),
        DownloadProgress("http://h/a.bin", 300),
        DownloadStarted("http://h/a.bin", "a.bin", 1000, 300),  # resumed after a drop
        DownloadProgress("http://h/a.bin", 700),
    )
    assert (live._known_total, tally.transferred) == (1000, 1000)
    _feed(live, tally, DownloadFinished(_result()))
    live.close()
    assert "1/1 files" in stream.getvalue()


def test_live_rate_and_eta_show_from_the_first_second_on_a_many_file_run() -> None:
    clock = FakeClock()
    live, tally, _, _ = _live(total_files=1000, clock=clock)
    for i in range(3):  # new files keep starting: the rate must not reset
        url = f"http://h/{i}.bin"
        _feed(live, tally, DownloadStarted(url, f"{i}.bin", 1 << 20, 0))
        clock.now += 0.25
        _feed(live, tally, DownloadProgress(url, 256 << 10))
        head = live.frame(100, 24)[0]
        assert "1.0 MiB/s" in head, head
        assert "ETA -:--:--" not in head, head
    # 1000 files of ~1 MiB at 1 MiB/s: the ETA is about 1000 s.
    assert "ETA 0:16:" in live.frame(100, 24)[0]


def test_the_final_frame_and_the_summary_show_one_rate() -> None:
    clock = FakeClock()
    live, tally, stream, _ = _live(total_files=1, clock=clock)
    _feed(live, tally, DownloadStarted("http://h/a.bin", "a.bin", 5 << 20, 0))
    for _ in range(10):
        clock.now += 0.1
        _feed(live, tally, DownloadProgress("http://h/a.bin", 512 << 10))
    live.draw()
    _feed(live, tally, DownloadFinished(_result()))
    tally.stop()
    live.close()
    last = stream.getvalue().rsplit("\r", 1)[-1]
    summary = summary_line(tally)
    rates = [re.findall(r"[\d.]+ [KMG]?i?B/s", text) for text in (last, summary)]
    assert rates[0], last
    assert rates[0] == rates[1], (last, summary)
    assert "5.0 MiB" in last
    assert "5.0 MiB" in summary


@given(
    width=st.integers(min_value=1, max_value=200),
    name=st.text(min_size=1, max_size=120),
    got=st.integers(min_value=0, max_value=1 << 40),
    total=st.none() | st.integers(min_value=1, max_value=1 << 40),
)
def test_every_live_line_fits_the_width(width: int, name: str, got: int, total: int | None) -> None:
    name = printable(name)
    row = file_row(name, got, total, name_width=cell_len(name), width=width)
    head = overall_line(
        done=got % 10_000,
        total_files=10_000,
        transferred=got,
        rate=float(got),
        eta=float(total or 0),
        elapsed=None,
        width=width,
    )
    assert cell_len(row) <= width
    assert cell_len(head) <= width


@pytest.mark.parametrize(("columns", "lines"), [(120, 30), (80, 24), (40, 24), (80, 6)])
def test_the_number_of_per_file_rows_is_bounded(columns: int, lines: int) -> None:
    live, tally, _, _ = _live(total_files=500, columns=columns, lines=lines)
    for i in range(200):
        _feed(live, tally, DownloadStarted(f"http://h/{i}", f"some/long/name-{i}.tar.gz", 100, 0))
    frame = live.frame(columns, lines)
    assert 2 <= len(frame) <= min(10, lines - 2)
    assert frame[-1].endswith("more downloading")
    assert all(cell_len(line) < columns for line in frame)


def test_after_a_narrowing_resize_the_whole_old_frame_is_erased() -> None:
    live, tally, stream, size = _live(total_files=4, columns=120)
    for i in range(3):
        _feed(live, tally, DownloadStarted(f"http://h/{i}", "n" * 60 + f"{i}.bin", 100, 0))
    live.draw()
    drawn = [cell_len(line) for line in live.frame(120, 24)]
    size[0] = (40, 24)
    before = len(stream.getvalue())
    live.draw()
    step = stream.getvalue()[before:]
    # The terminal re-wrapped each old line to ceil(len / 40) rows: go up them all.
    up = sum(math.ceil(n / 40) for n in drawn) - 1
    assert step.startswith(f"\r\x1b[{up}A\x1b[J"), repr(step[:20])
    live.close()


def test_live_failure_lines_and_names_are_literal_text() -> None:
    live, tally, stream, _ = _live(total_files=2)
    _feed(
        live,
        tally,
        DownloadStarted("http://h/b", "[red]b\x1b[2J.bin", 10, 0),
        DownloadFinished(_result("failed", "HTTP 404 [/x]", url="http://h/[/x]\x1b]0;t\x07")),
    )
    live.draw()
    live.close()
    out = stream.getvalue()
    assert "[red]b\\x1b[2J.bin" in out
    assert "http://h/[/x]\\x1b]0;t\\x07: HTTP 404 [/x]" in out
    assert "\x1b[2J" not in out
    assert "\x07" not in out


def test_events_only_count_the_drawing_is_left_to_the_timer() -> None:
    # rich.progress redrew the whole display on every add_task: 10,000 lines cost
    # 30 s of CPU. Here events draw nothing, whatever the list's length.
    live, tally, stream, _ = _live(total_files=10_000)
    for i in range(10_000):
        url = f"http://h/{i}.bin"
        _feed(
            live,
            tally,
            DownloadStarted(url, f"{i}.bin", 4096, 0),
            DownloadProgress(url, 4096),
            DownloadFinished(_result(url=url)),
        )
    assert stream.getvalue() == ""
    live.close()
    assert stream.getvalue().count("\n") == 1  # one final frame
    assert "10000/10000 files" in stream.getvalue()
