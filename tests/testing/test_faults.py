"""Fault parameters mean what they say, in url() and on the wire."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from asyncconc.testing import FileServer, serve_files_in_thread

BODY = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    with serve_files_in_thread(files={"a.txt": BODY}) as running:
        yield running


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@pytest.mark.parametrize(
    "faults",
    [
        {"norange": False},
        {"gzip": 0},
        {"novalidator": 0},
        {"loop": 0},
        {"chunked": False},
        {"badrange": None},
    ],
)
def test_false_flags_are_off(server: FileServer, faults: dict[str, object]) -> None:
    url = server.url("a.txt", **faults)
    status, headers, body = fetch(url)
    assert (status, body) == (200, BODY)
    assert "Content-Encoding" not in headers
    assert headers["Accept-Ranges"] == "bytes"
    assert "ETag" in headers
    assert headers["Content-Length"] == str(len(BODY))


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ({"truncat": 10}, "did you mean 'truncate'"),
        ({"bogus": 1}, "unknown fault parameter 'bogus'"),
        ({"fail": "yes"}, "fail='yes': expected a whole number"),
        ({"fail": "1_0"}, "expected a whole number"),
        ({"status": 99}, "between 200 and 599"),
        ({"status": 101}, "between 200 and 599"),
        ({"delay": 1e308}, "between 0 and 300"),
        ({"delay": "nan"}, "between 0 and 300"),
        ({"drip": -1}, "between 0 and 300"),
        ({"norange": "maybe"}, "expected 1/0 or true/false"),
        ({"redirect_status": 305}, "301, 302, 303, 307 or 308"),
        ({"times": 0}, "at least 1"),
        ({"stall": 1, "truncate": 2}, "cannot be combined"),
        ({"location": "http://x/\r\nSet-Cookie: a=b"}, "without CR, LF or NUL"),
    ],
)
def test_bad_faults_raise_at_url_time(
    server: FileServer, faults: dict[str, object], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace("?", r"\?")):
        server.url("a.txt", **faults)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("truncat=10", b"did you mean 'truncate'"),
        ("fail=yes", b"expected a whole number"),
        ("status=99", b"between 200 and 599"),
        ("status=101", b"between 200 and 599"),
        ("delay=1e308", b"between 0 and 300"),
        ("stall=1&truncate=2", b"cannot be combined"),
    ],
)
def test_bad_faults_on_the_wire_are_a_400_with_the_reason(
    server: FileServer, query: str, reason: bytes
) -> None:
    status, _, body = fetch(f"{server.base_url}/a.txt?{query}")
    assert status == 400
    assert reason in body


def test_other_query_parameters_are_ordinary(server: FileServer) -> None:
    url = server.url("a.txt", query={"id": 7}, fail=0)
    assert url.endswith("/a.txt?id=7&fail=0")
    assert fetch(url)[0::2] == (200, BODY)
    with pytest.raises(ValueError, match="is a fault name"):
        server.url("a.txt", query={"fail": 1})


def test_fail_then_truncate_composes_with_times(server: FileServer) -> None:
    # Two 503s, then one truncated body, then the whole file: ``times``
    # counts the requests that get the file, not the failures.
    url = server.url("a.txt", fail=2, truncate=100, times=1, query={"case": "compose"})
    assert fetch(url)[0] == 503
    assert fetch(url)[0] == 503
    with pytest.raises(http.client.IncompleteRead) as cut:
        fetch(url)
    assert len(cut.value.partial) == 100
    assert fetch(url)[0::2] == (200, BODY)


def test_fail_with_times_fails_k_then_serves(server: FileServer) -> None:
    url = server.url("a.txt", fail=1, times=1, query={"case": "fail-times"})
    assert [fetch(url)[0] for _ in range(3)] == [503, 200, 200]


def test_status_200_serves_the_file_and_status_can_carry_retry_after(server: FileServer) -> None:
    assert fetch(server.url("a.txt", status=200))[0::2] == (200, BODY)
    status, headers, _ = fetch(server.url("a.txt", status=429, retry_after=7))
    assert (status, headers["Retry-After"]) == (429, "7")


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_status_can_be_chosen(server: FileServer, code: int) -> None:
    status, headers, _ = fetch(server.url("a.txt", redirect=1, redirect_status=code))
    assert status == code
    assert headers["Location"] == "/a.txt?redirect_status=" + str(code)


def test_loop_false_does_not_redirect(server: FileServer) -> None:
    assert fetch(server.url("a.txt", loop=0))[0] == 200
    assert fetch(server.url("a.txt", loop=1))[0] == 302


def test_leading_slash_names_the_same_file(server: FileServer) -> None:
    server.add_bytes("/slash.txt", b"s")
    assert server.url("/slash.txt") == server.url("slash.txt")
    assert fetch(server.url("/slash.txt"))[0::2] == (200, b"s")


def test_stall_is_bounded_by_the_client_going_away(server: FileServer) -> None:
    # The client gives up; the server's handler ends with it (no pile-up).
    url = server.url("a.txt", stall=10, query={"case": "stall"})
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(f"GET {url[len(server.base_url) :]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 10:
            data += sock.recv(65536)
        assert server.in_flight >= 1
    assert data.partition(b"\r\n\r\n")[2] == BODY[:10]
