"""URL lists and requests: ``asyncconc.downloader._models``."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncconc import DownloadRequest, DownloadResult, download, parse_url_list
from asyncconc.downloader._models import has_url_lines
from asyncconc.testing import FileServer

SHA = "ab" * 32


def test_blank_lines_and_comments_are_skipped_and_lines_numbered_from_one() -> None:
    lines = [
        "# a list\n",
        "\n",
        "http://h/a.bin\n",
        "   \t\n",
        "  # indented comment\n",
        "https://h/b.bin  b-name.bin\n",
    ]
    requests = list(parse_url_list(lines))
    assert [(r.url, r.line, r.name) for r in requests] == [
        ("http://h/a.bin", 3, None),
        ("https://h/b.bin", 6, PurePosixPath("b-name.bin")),
    ]
    assert all(r.problem is None for r in requests)


def test_a_byte_order_mark_before_the_first_url_is_ignored() -> None:
    (first, second) = parse_url_list(["\ufeffhttp://h/a.bin\r\n", "http://h/b.bin\tb.txt\r\n"])
    assert (first.url, first.problem) == ("http://h/a.bin", None)
    assert (second.url, second.name, second.problem) == (
        "http://h/b.bin",
        PurePosixPath("b.txt"),
        None,
    )


def test_name_and_sha256_fields_in_either_order() -> None:
    first, second, third = parse_url_list(
        [
            f"http://h/a docs/a.pdf sha256={SHA.upper()}",
            f"http://h/b sha256={SHA} b.pdf",
            f"http://h/c SHA256={SHA}",
        ]
    )
    assert (first.name, first.sha256) == (PurePosixPath("docs/a.pdf"), SHA)
    assert (second.name, second.sha256) == (PurePosixPath("b.pdf"), SHA)
    assert (third.name, third.sha256) == (None, SHA)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("example.com/a.bin", "no scheme"),
        ("ftp://example.com/a.bin", "unsupported scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("javascript:alert(1)", "unsupported scheme"),
        ("garbage", "no scheme"),
        ("http://", "no host"),
        ("http://h:99999/x", "invalid URL"),
        ("http://h/a ../escape.txt", "not a relative path inside"),
        ("http://h/a /abs/path.txt", "not a relative path inside"),
        ("http://h/a name sha256=1234", "not 64 hex digits"),
        (f"http://h/a sha256={SHA} sha256={SHA}", "sha256 given twice"),
        ("http://h/a one two", "unexpected extra field 'two'"),
    ],
)
def test_invalid_lines_carry_their_line_number_and_reason(line: str, words: str) -> None:
    (request,) = parse_url_list(["# header", line])
    assert request.problem is not None
    assert request.problem.startswith("line 2: ")
    assert words in request.problem
    assert request.line == 2


def test_undecodable_bytes_make_a_line_invalid_not_a_crash() -> None:
    # Bytes that were not UTF-8 arrive as lone surrogates (surrogateescape).
    (bad_url, bad_name) = parse_url_list(["http://h/a\udcff.bin", "http://h/b.bin n\udcfe.bin"])
    assert bad_url.problem is not None
    assert "not valid UTF-8" in bad_url.problem
    assert bad_name.problem is None
    assert bad_name.name == PurePosixPath("n_.bin")


def test_from_url_validates_like_a_line() -> None:
    assert DownloadRequest.from_url("http://h/x").problem is None
    assert DownloadRequest.from_url("HTTPS://H/x").problem is None
    assert DownloadRequest.from_url("ftp://h/x").problem is not None
    assert DownloadRequest.from_url("http://h/x", "../x").problem is not None
    assert "line" not in (DownloadRequest.from_url("ftp://h/x").problem or "")


def test_result_as_dict_has_the_report_fields() -> None:
    result = DownloadResult(
        url="http://h/x",
        path="x",
        status="ok",
        bytes=3,
        sha256=SHA,
        attempts=1,
        error=None,
        seconds=0.5,
    )
    data = result.as_dict()
    assert {"url", "path", "status", "bytes", "sha256", "attempts", "error", "seconds"} <= set(data)
    assert data["status"] == "ok"
    assert result.ok
    failed = DownloadResult("u", None, "failed", 0, None, 2, "boom", 0.1)
    assert not failed.ok


async def test_invalid_lines_fail_and_the_others_still_download(
    server: FileServer, dest: Path
) -> None:
    server.add_bytes("good1.bin", b"one")
    server.add_bytes("good2.bin", b"two")
    lines = [
        server.url("good1.bin"),
        "no-scheme.example/x",
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "%%% garbage %%%",
        server.url("good2.bin"),
    ]
    results = await download(parse_url_list(lines), dest)
    assert [r.status for r in results] == ["ok", "failed", "failed", "failed", "failed", "ok"]
    for result, line in zip(results[1:5], range(2, 6), strict=True):
        assert result.line == line
        assert result.error is not None
        assert result.error.startswith(f"line {line}: ")
        assert result.attempts == 0
        assert result.path is None
    assert (dest / "good1.bin").read_bytes() == b"one"
    assert (dest / "good2.bin").read_bytes() == b"two"
    assert sorted(r.path for r in server.requests) == ["/good1.bin", "/good2.bin"]


# Lines built from the pieces that decide whether a line holds a request.
_piece = st.sampled_from(
    ["", " ", "\t", "#", "# c", "\ufeff", "http://h/a", "a.txt", "sha256=0", "\xa0"]
)
_line = st.lists(_piece, max_size=4).map("".join)


@given(st.lists(_line, max_size=6))
def test_has_url_lines_says_whether_the_list_yields_a_request(lines: list[str]) -> None:
    # The CLI decides "no URLs in FILE" from it before the list is parsed.
    assert has_url_lines(lines) == bool(list(parse_url_list(lines)))


@given(st.lists(_line, max_size=6))
def test_a_parsed_line_is_the_same_request_as_from_line_gives(lines: list[str]) -> None:
    for request in parse_url_list(lines):
        if request.line is None or request.problem is not None:
            continue
        text = lines[request.line - 1]
        fields = (text.removeprefix("\ufeff") if request.line == 1 else text).split()
        fields = fields[: next((i for i, f in enumerate(fields) if f.startswith("#")), None)]
        assert DownloadRequest.from_line(" ".join(fields), request.line) == request


@given(st.lists(_line, max_size=6))
def test_a_request_sent_to_a_worker_process_is_the_same_request(lines: list[str]) -> None:
    # download --workers sends each request's plain fields, not the object.
    requests = [*parse_url_list(lines), DownloadRequest("http://h/x", PurePosixPath("d/a.txt"))]
    for request in requests:
        back = DownloadRequest._from_wire(request._wire())
        assert back == request
        assert back.checked == request.checked
        assert back.name is None or isinstance(back.name, PurePosixPath)
