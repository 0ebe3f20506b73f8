"""Naming and sanitising: ``asyncconc.downloader._naming``, and names as stored.

Precedence: explicit name > Content-Disposition > URL path > ``index.html``.
Nothing a server says may place a file outside the destination folder.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncconc import DownloadRequest, download
from asyncconc.downloader._naming import (
    DEFAULT_NAME,
    META_SUFFIX,
    NameAllocator,
    choose_name,
    filename_from_content_disposition,
    filename_from_url,
    name_max,
    safe_relpath,
    sanitize_component,
)
from asyncconc.testing import FileServer
from tests.conftest import files_under

URL = "http://example.invalid/files/from-url.bin"


def assert_safe_component(name: str, limit: int = 255) -> None:
    assert name
    assert name not in (".", "..")
    assert "/" not in name
    assert "\\" not in name
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in name), repr(name)
    assert not name.startswith(".")
    # Room is left for ".part.meta" and a "-NNN" collision suffix.
    assert len((name + META_SUFFIX + "-999").encode()) <= limit


# -- precedence ---------------------------------------------------------------


def test_content_disposition_wins_over_the_url() -> None:
    assert choose_name(URL, 'attachment; filename="report.pdf"') == "report.pdf"


def test_url_segment_is_used_without_content_disposition() -> None:
    assert choose_name(URL, None) == "from-url.bin"
    assert choose_name(URL, "inline") == "from-url.bin"
    assert choose_name(URL, "attachment; filename=") == "from-url.bin"


@pytest.mark.parametrize(
    "url", ["http://h/", "http://h", "http://h/dir/", "http://h/?name=x.bin", "http://h/.."]
)
def test_index_html_when_the_url_has_no_usable_name(url: str) -> None:
    assert choose_name(url, None) == DEFAULT_NAME


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/a.bin?x=1", "a.bin"),
        ("http://h/a.bin?name=../../evil&x=/etc/passwd", "a.bin"),
        ("http://h/dir/a.tar.gz?sig=abc#frag", "a.tar.gz"),
        ("http://h/na%C3%AFve%20file.txt", "naïve file.txt"),
        ("http://h/dir/a%2F..%2F..%2Fb.txt", "a_.._.._b.txt"),
    ],
)
def test_url_name_is_the_percent_decoded_last_segment_never_the_query(
    url: str, expected: str
) -> None:
    assert choose_name(url, None) == expected
    assert "?" not in choose_name(url, None)


def test_filename_from_url_ignores_query_and_fragment() -> None:
    assert filename_from_url("http://h/p/q.zip?download=1#top") == "q.zip"


async def test_explicit_name_beats_content_disposition_and_url(
    server: FileServer, dest: Path
) -> None:
    server.add_bytes("url-name.bin", b"data")
    url = server.url("url-name.bin", cd='attachment; filename="cd-name.bin"')
    explicit, from_cd = await download(
        [
            DownloadRequest.from_url(url, "sub/explicit.bin"),
            server.url("url-name.bin", cd='attachment; filename="cd-name.bin"', query={"x": 1}),
        ],
        dest,
    )
    assert explicit.path == "sub/explicit.bin"
    assert from_cd.path == "cd-name.bin"
    assert files_under(dest) == {"sub/explicit.bin", "cd-name.bin"}
    assert (dest / "sub" / "explicit.bin").read_bytes() == b"data"


async def test_server_without_names_gives_index_html(server: FileServer, dest: Path) -> None:
    server.add_bytes("", b"<html>home</html>")
    (result,) = await download([server.base_url + "/"], dest)
    assert result.status == "ok"
    assert result.path == "index.html"
    assert (dest / "index.html").read_bytes() == b"<html>home</html>"


# -- Content-Disposition parsing -----------------------------------------------


def test_rfc5987_filename_star_is_decoded_with_its_charset() -> None:
    assert filename_from_content_disposition("attachment; filename*=UTF-8''na%C3%AFve.txt") == (
        "naïve.txt"
    )
    assert filename_from_content_disposition("attachment; filename*=iso-8859-1''caf%E9.txt") == (
        "café.txt"
    )


def test_filename_star_wins_over_plain_filename_in_either_order() -> None:
    both = "attachment; filename=\"fallback.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt"
    assert filename_from_content_disposition(both) == "€ rates.txt"
    reversed_order = "attachment; filename*=UTF-8''%E2%82%AC.txt; filename=\"fallback.txt\""
    assert filename_from_content_disposition(reversed_order) == "€.txt"


def test_undecodable_filename_star_falls_back_to_filename() -> None:
    value = "attachment; filename*=UTF-8''%FF%FE.txt; filename=\"plain.txt\""
    assert filename_from_content_disposition(value) == "plain.txt"


def test_quoted_filename_may_hold_semicolons_and_escapes() -> None:
    assert filename_from_content_disposition('attachment; filename="a;b.txt"') == "a;b.txt"
    assert filename_from_content_disposition(r'attachment; filename="say \"hi\".txt"') == (
        'say "hi".txt'
    )
    assert filename_from_content_disposition("attachment; FileName=plain.bin; size=3") == (
        "plain.bin"
    )


HOSTILE_CONTENT_DISPOSITIONS = [
    'attachment; filename="../../evil.txt"',
    'attachment; filename="/etc/passwd"',
    'attachment; filename="..\\\\..\\\\evil.txt"',
    'attachment; filename="C:\\\\Windows\\\\evil.txt"',
    "attachment; filename*=UTF-8''..%2F..%2Fevil.txt",
    "attachment; filename*=UTF-8''%2Fetc%2Fpasswd",
    "attachment; filename*=UTF-8''..%5C..%5Cevil.txt",
    "attachment; filename*=UTF-8''evil%00.txt",
    "attachment; filename*=UTF-8''ev%0Ail%0D%1B%7F.txt",
    "attachment; filename*=UTF-8''%C2%85bad%C2%9B.txt",
    'attachment; filename=".."',
    'attachment; filename="."',
    "attachment; filename*=UTF-8''%2e%2e",
    'attachment; filename="../"',
    'attachment; filename=".bashrc"',
    'attachment; filename="-rf"',
    'attachment; filename="con"',
    'attachment; filename="NUL.txt"',
    'attachment; filename="lpt1"',
    'attachment; filename="' + "x" * 1000 + '.txt"',
    "attachment; filename*=UTF-8''" + "%C3%A9" * 400 + ".txt",
]


@pytest.mark.parametrize("value", HOSTILE_CONTENT_DISPOSITIONS)
def test_hostile_content_disposition_becomes_one_safe_component(value: str) -> None:
    name = choose_name(URL, value)
    assert_safe_component(name)
    assert safe_relpath(name) == PurePosixPath(name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('attachment; filename="../../evil.txt"', "evil.txt"),
        ('attachment; filename="/etc/passwd"', "passwd"),
        ("attachment; filename*=UTF-8''..%2F..%2Fevil.txt", "evil.txt"),
        ("attachment; filename*=UTF-8''evil%00.txt", "evil_.txt"),
        ('attachment; filename=".."', "from-url.bin"),
        ("attachment; filename*=UTF-8''%2e%2e", "from-url.bin"),
        ('attachment; filename=".bashrc"', "bashrc"),
        ('attachment; filename="con"', "_con"),
        ('attachment; filename="NUL.txt"', "_NUL.txt"),
    ],
)
def test_hostile_content_disposition_keeps_only_a_basename(value: str, expected: str) -> None:
    assert choose_name(URL, value) == expected


@settings(deadline=None)
@given(st.text())
def test_any_content_disposition_yields_a_safe_name(value: str) -> None:
    assert_safe_component(choose_name(URL, "attachment; filename*=UTF-8''" + value))
    assert_safe_component(choose_name(URL, f'attachment; filename="{value}"'))
    assert_safe_component(choose_name(URL, value))


@settings(deadline=None)
@given(st.text())
def test_any_url_path_yields_a_safe_name(segment: str) -> None:
    from urllib.parse import quote

    assert_safe_component(choose_name("http://h/" + quote(segment, safe=""), None))


# -- sanitising and shortening ---------------------------------------------------


def test_long_name_is_shortened_to_the_limit_keeping_the_extension() -> None:
    name = sanitize_component("a" * 1000 + ".tar", limit=255)
    assert name.endswith(".tar")
    assert len(name.encode()) <= 255 - len(META_SUFFIX) - 4
    assert set(name[: -len(".tar")]) == {"a"}


def test_long_multibyte_name_is_cut_on_a_character_boundary() -> None:
    name = sanitize_component("é" * 300 + ".txt", limit=255)
    assert name.endswith(".txt")
    assert len(name.encode()) <= 255
    assert unicodedata.normalize("NFC", name) == name
    assert set(name[:-4]) == {"é"}


def test_name_max_reads_the_file_system_limit(tmp_path: Path) -> None:
    assert name_max(tmp_path) == os.pathconf(tmp_path, "PC_NAME_MAX")
    assert name_max(None) == 255
    assert name_max(tmp_path / "missing") == 255


@pytest.mark.parametrize("name", ["", ".", "..", "...", "  ", "-", " . "])
def test_names_with_nothing_usable_are_empty(name: str) -> None:
    assert sanitize_component(name) == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a\x00b", "a_b"),
        ("a\udcffb", "a_b"),
        ("a/b\\c", "a_b_c"),
        ("tab\there\n", "tab_here_"),
        ("\x1b[31m", "_[31m"),
    ],
)
def test_separators_and_control_characters_are_replaced(name: str, expected: str) -> None:
    assert sanitize_component(name) == expected


async def test_very_long_content_disposition_name_is_stored(server: FileServer, dest: Path) -> None:
    server.add_bytes("long", b"long")
    value = 'attachment; filename="' + "n" * 600 + '.dat"'
    (result,) = await download([server.url("long", cd=value)], dest, backoff=0.01)
    assert result.status == "ok", result.error
    assert result.path is not None
    assert result.path.endswith(".dat")
    assert len(result.path.encode()) <= name_max(dest)
    assert (dest / result.path).read_bytes() == b"long"


# -- explicit names: relative paths that stay inside ----------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.pdf", "a.pdf"),
        ("docs/a.pdf", "docs/a.pdf"),
        ("docs//./a.pdf", "docs/a.pdf"),
        ("docs\\a.pdf", "docs/a.pdf"),
        ("docs/.hidden", "docs/hidden"),
    ],
)
def test_explicit_relative_names_are_kept(name: str, expected: str) -> None:
    assert safe_relpath(name) == PurePosixPath(expected)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../a",
        "a/../../b",
        "docs/../../x",
        "/etc/passwd",
        "\\\\server\\share",
        "C:evil",
        "a\x00b",
    ],
)
def test_explicit_names_that_escape_are_refused(name: str) -> None:
    assert safe_relpath(name) is None


# -- collisions ---------------------------------------------------------------


def test_allocator_gives_distinct_names_in_claim_order() -> None:
    names = NameAllocator()
    got = [names.claim(PurePosixPath(p)) for p in ["a.txt", "a.txt", "A.TXT", "b", "b", "d/a.txt"]]
    assert [p.as_posix() for p in got] == ["a.txt", "a-2.txt", "A-3.TXT", "b", "b-2", "d/a.txt"]


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("a.bin", "a.bin.part", "a.bin-2.part"),
        ("a.bin", "A.BIN.PART.META", "A.BIN.PART-2.META"),
        ("a.bin.part", "a.bin", "a-2.bin"),
        ("a.bin.part.meta", "a.bin", "a-2.bin"),
        ("d/a.bin", "d/a.bin.part", "d/a.bin-2.part"),
        ("a.bin", "b/a.bin.part", "b/a.bin.part"),
    ],
)
def test_a_name_also_reserves_its_temporary_files(first: str, second: str, expected: str) -> None:
    names = NameAllocator()
    assert names.claim(PurePosixPath(first)) == PurePosixPath(first)
    assert names.claim(PurePosixPath(second)) == PurePosixPath(expected)


async def test_a_line_named_like_another_lines_part_file_keeps_its_data(
    server: FileServer, dest: Path
) -> None:
    big = server.add_generated("a.bin", 3_000_000)
    server.add_bytes("b", b"second")
    slow, named = await download(
        [
            server.url("a.bin", drip=0.001, drip_size=65536),
            DownloadRequest.from_url(server.url("b"), "a.bin.part"),
        ],
        dest,
    )
    assert (slow.status, named.status) == ("ok", "ok")
    assert slow.path == "a.bin"
    assert named.path is not None
    assert named.path != "a.bin.part"
    assert named.note is not None
    assert (dest / named.path).read_bytes() == b"second"
    assert (dest / "a.bin").stat().st_size == big.size
    assert files_under(dest) == {"a.bin", named.path}


def test_allocator_release_frees_a_name() -> None:
    names = NameAllocator()
    first = names.claim(PurePosixPath("x.bin"))
    names.release(first)
    assert names.claim(PurePosixPath("x.bin")) == PurePosixPath("x.bin")


async def test_two_lines_with_one_name_keep_both_files_and_say_so(
    server: FileServer, dest: Path
) -> None:
    server.add_bytes("a/data.bin", b"first")
    server.add_bytes("b/data.bin", b"second")
    server.add_bytes("c", b"third")
    first, second, third = await download(
        [
            server.url("a/data.bin"),
            server.url("b/data.bin"),
            server.url("c", cd='attachment; filename="data.bin"'),
        ],
        dest,
    )
    assert first.path == "data.bin"
    assert first.note is None
    paths = {second.path, third.path}
    assert paths == {"data-2.bin", "data-3.bin"}
    assert second.note is not None
    assert "data.bin" in second.note
    assert second.path is not None
    assert second.path in second.note
    assert third.note is not None
    assert (dest / "data.bin").read_bytes() == b"first"
    assert second.path is not None
    assert third.path is not None
    assert (dest / second.path).read_bytes() == b"second"
    assert (dest / third.path).read_bytes() == b"third"
    assert files_under(dest) == {"data.bin", "data-2.bin", "data-3.bin"}


# -- nothing outside the destination --------------------------------------------


async def test_hostile_servers_never_write_outside_the_destination(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    dest = tmp_path / "deep" / "out"
    server.add_bytes("payload", b"x")
    urls = [
        server.url("payload", cd=value, query={"n": i})
        for i, value in enumerate(HOSTILE_CONTENT_DISPOSITIONS)
    ]
    urls += [
        server.base_url + "/..%2F..%2Fescape.txt",
        server.base_url + "/%2E%2E",
        server.url("payload", location=server.base_url + "/../../escape2.txt"),
    ]
    results = await download(urls, dest, backoff=0.01)
    stored = files_under(tmp_path)
    assert stored, "nothing was downloaded"
    assert all(path.startswith("deep/out/") for path in stored), sorted(stored)
    for result in results:
        if result.path is not None:
            assert ".." not in PurePosixPath(result.path).parts
            assert not PurePosixPath(result.path).is_absolute()
    assert sum(r.status == "ok" for r in results) >= len(HOSTILE_CONTENT_DISPOSITIONS)


async def test_explicit_name_escaping_the_folder_fails_without_a_request(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    server.add_bytes("x", b"x")
    results = await download(
        [
            DownloadRequest.from_url(server.url("x"), "../escape.txt"),
            DownloadRequest.from_url(server.url("x"), "/tmp/escape.txt"),
        ],
        dest,
    )
    assert [r.status for r in results] == ["failed", "failed"]
    assert all("output folder" in (r.error or "") for r in results)
    assert server.hits("x") == 0
    assert files_under(tmp_path) == set()


async def test_a_symlink_inside_the_destination_does_not_lead_out(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)
    server.add_bytes("x", b"x")
    (result,) = await download([DownloadRequest.from_url(server.url("x"), "link/x")], dest)
    assert result.status == "failed"
    assert "outside" in (result.error or "")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("resume", [True, False])
async def test_symlinked_part_files_are_not_followed(
    server: FileServer, tmp_path: Path, resume: bool
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (dest / "x.part").symlink_to(victim)
    (dest / "y.part.meta").symlink_to(tmp_path / "victim-meta")
    server.add_bytes("x", b"attack")
    server.add_bytes("y", b"attack")
    await download([server.url("x"), server.url("y")], dest, resume=resume, retries=0)
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "victim-meta").exists()
    # The planted links were replaced by real files, never written through.
    assert files_under(tmp_path) == {"victim", "out/x", "out/y"}
    assert (dest / "y").read_bytes() == b"attack"
