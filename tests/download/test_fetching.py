"""One URL start to finish: ``asyncconc.downloader._fetching``.

Every test runs against the real loopback server; faults come from its query
parameters (see ``asyncconc.testing._fileserver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from asyncconc import (
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadRequest,
    DownloadResult,
    download,
)
from asyncconc.downloader._fetching import MAX_REDIRECTS, RetryPolicy, _retry_after
from asyncconc.testing import FileServer, pattern_bytes, serve_files
from tests.conftest import files_under

FAST: dict[str, Any] = {"backoff": 0.01, "backoff_max": 0.05}


async def fetch_one(url: str | DownloadRequest, dest: Path, **options: Any) -> DownloadResult:
    (result,) = await download([url], dest, **{**FAST, **options})
    return result


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- retry classes --------------------------------------------------------------


@pytest.mark.parametrize("fail_status", [500, 502, 503, 504, 408, 429])
async def test_transient_statuses_are_retried_until_success(
    server: FileServer, dest: Path, fail_status: int
) -> None:
    served = server.add_bytes("f.bin", b"payload")
    result = await fetch_one(server.url("f.bin", fail=2, fail_status=fail_status), dest)
    assert result.status == "ok", result.error
    assert result.attempts == 3
    assert result.sha256 == served.sha256
    assert server.hits("f.bin") == 3
    assert (dest / "f.bin").read_bytes() == b"payload"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 451])
async def test_other_client_errors_fail_at_once(
    server: FileServer, dest: Path, status: int
) -> None:
    server.add_bytes("f.bin", b"payload")
    result = await fetch_one(server.url("f.bin", status=status), dest)
    assert result.status == "failed"
    assert result.attempts == 1
    assert result.error is not None
    assert f"HTTP {status}" in result.error
    assert server.hits("f.bin") == 1
    assert files_under(dest) == set()


async def test_a_missing_file_is_a_404_failure(server: FileServer, dest: Path) -> None:
    result = await fetch_one(server.url("nothing-here.bin"), dest)
    assert (result.status, result.attempts) == ("failed", 1)
    assert "HTTP 404" in (result.error or "")


async def test_retries_give_up_after_the_configured_count(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"payload")
    result = await fetch_one(server.url("f.bin", fail=100), dest, retries=2)
    assert result.status == "failed"
    assert result.attempts == 3
    assert server.hits("f.bin") == 3
    assert "HTTP 503" in (result.error or "")
    assert "gave up after 3 attempts" in (result.error or "")
    assert files_under(dest) == set()


async def test_zero_retries_means_one_attempt(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"payload")
    result = await fetch_one(server.url("f.bin", fail=1), dest, retries=0)
    assert (result.status, result.attempts) == ("failed", 1)
    assert server.hits("f.bin") == 1


async def test_connection_errors_are_retried_then_fail(dest: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/f.bin"
    started = time.monotonic()
    result = await fetch_one(url, dest, retries=2)
    assert result.status == "failed"
    assert result.attempts == 3
    assert "gave up after 3 attempts" in (result.error or "")
    assert time.monotonic() - started < 10
    assert not dest.exists() or files_under(dest) == set()


# -- backoff and Retry-After -----------------------------------------------------


def test_backoff_doubles_per_retry_with_equal_jitter_and_a_cap() -> None:
    policy = RetryPolicy(retries=10, backoff=0.5, backoff_max=3.0)
    for retry, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (8, 3.0)]:
        samples = [policy.delay(retry) for _ in range(300)]
        assert all(step / 2 <= s <= step for s in samples), (retry, min(samples), max(samples))
        assert len(set(samples)) > 250, "no jitter"
        assert min(samples) < step * 0.6
        assert max(samples) > step * 0.9
        assert statistics.mean(samples) == pytest.approx(step * 0.75, rel=0.1)


def test_backoff_stays_capped_after_very_many_retries() -> None:
    policy = RetryPolicy(retries=10_000, backoff=0.5, backoff_max=30.0)
    assert 15.0 <= policy.delay(5000) <= 30.0


def test_retry_after_raises_the_wait_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff=0.1, backoff_max=1.0, retry_after_max=60.0)
    assert policy.delay(1, retry_after=5.0) == 5.0
    assert policy.delay(1, retry_after=3600.0) == 60.0
    assert 0.05 <= policy.delay(1, retry_after=0.0) <= 0.1


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    def parse(value: str) -> float | None:
        return _retry_after(CIMultiDictProxy(CIMultiDict({"Retry-After": value})))

    assert parse("7") == 7.0
    assert parse(" 12 ") == 12.0
    in_ten = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8.0 <= (parse(in_ten) or 0.0) <= 10.5
    assert parse("Mon, 01 Jan 2001 00:00:00 GMT") == 0.0
    assert parse("soon") is None
    assert parse("-3") is None
    assert _retry_after(CIMultiDictProxy(CIMultiDict())) is None


async def test_backoff_waits_between_attempts(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"payload")
    started = time.monotonic()
    result = await fetch_one(
        server.url("f.bin", fail=2), dest, backoff=0.2, backoff_max=10.0, retries=2
    )
    elapsed = time.monotonic() - started
    assert result.status == "ok"
    # Retry 1 waits 0.1..0.2 s, retry 2 waits 0.2..0.4 s.
    assert elapsed >= 0.3
    assert elapsed < 5


async def test_retry_after_is_honoured(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"payload")
    started = time.monotonic()
    result = await fetch_one(server.url("f.bin", fail=1, fail_status=429, retry_after=1), dest)
    elapsed = time.monotonic() - started
    assert result.status == "ok"
    assert result.attempts == 2
    assert elapsed >= 0.95


async def test_retry_after_is_capped(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"payload")
    started = time.monotonic()
    result = await fetch_one(
        server.url("f.bin", fail=1, retry_after=3600), dest, retry_after_max=0.1
    )
    assert result.status == "ok"
    assert time.monotonic() - started < 5


# -- redirects ----------------------------------------------------------------------


@pytest.mark.parametrize("hops", [1, 3, MAX_REDIRECTS])
async def test_redirects_are_followed_up_to_ten(server: FileServer, dest: Path, hops: int) -> None:
    served = server.add_bytes("f.bin", b"moved")
    result = await fetch_one(server.url("f.bin", redirect=hops), dest)
    assert result.status == "ok", result.error
    assert result.sha256 == served.sha256
    assert server.hits("f.bin") == hops + 1
    assert (dest / "f.bin").read_bytes() == b"moved"


async def test_more_than_ten_redirects_fail(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"moved")
    result = await fetch_one(server.url("f.bin", redirect=MAX_REDIRECTS + 1), dest)
    assert result.status == "failed"
    assert f"more than {MAX_REDIRECTS} redirects" in (result.error or "")
    assert server.hits("f.bin") == MAX_REDIRECTS + 1
    assert files_under(dest) == set()


async def test_a_redirect_loop_fails_with_a_clear_error(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"x")
    result = await fetch_one(server.url("f.bin", loop=1), dest)
    assert result.status == "failed"
    assert result.attempts == 1
    assert "redirect loop" in (result.error or "")
    assert server.hits("f.bin") <= 2


@pytest.mark.parametrize(
    "location",
    ["ftp://127.0.0.1/f.bin", "file:///etc/passwd", "javascript:alert(1)", "data:text/plain,hi"],
)
async def test_a_redirect_to_a_bad_location_fails_cleanly(
    server: FileServer, dest: Path, location: str
) -> None:
    server.add_bytes("f.bin", b"x")
    result = await fetch_one(server.url("f.bin", location=location), dest)
    assert result.status == "failed"
    assert result.attempts == 1
    assert "redirected to" in (result.error or "")
    assert files_under(dest) == set()


async def test_credentials_are_not_forwarded_to_another_origin(
    server: FileServer, dest: Path
) -> None:
    secret = {"Authorization": "Bearer s3cret", "Cookie": "session=1", "X-Trace": "keep-me"}
    async with serve_files() as other:
        other.add_bytes("f.bin", b"elsewhere")
        server.add_bytes("f.bin", b"here")
        cross, same = await download(
            [
                server.url("f.bin", location=other.url("f.bin")),
                DownloadRequest.from_url(server.url("f.bin", redirect=1), "same.bin"),
            ],
            dest,
            headers=secret,
            **FAST,
        )
    assert cross.status == "ok"
    assert same.status == "ok"
    assert (dest / "f.bin").read_bytes() == b"elsewhere"
    (at_other,) = other.requests
    assert "Authorization" not in at_other.headers
    assert "Cookie" not in at_other.headers
    assert at_other.headers.get("X-Trace") == "keep-me"
    assert all(r.headers.get("Authorization") == "Bearer s3cret" for r in server.requests)
    assert len(server.requests) == 3


async def test_a_caller_sessions_credentials_stay_with_their_origin(
    server: FileServer, dest: Path
) -> None:
    defaults = {"Authorization": "Bearer session-secret", "X-Trace": "from-session"}
    async with serve_files() as other, aiohttp.ClientSession(headers=defaults) as session:
        served = other.add_generated("f.bin", 3_000_000)
        server.add_bytes("g.bin", b"same origin")
        moved, same = await download(
            [
                server.url("f.bin", location=other.url("f.bin")),
                server.url("g.bin", redirect=1),
            ],
            dest,
            session=session,
            **FAST,
        )
        assert not session.closed
    assert moved.status == "ok", moved.error
    assert moved.sha256 == served.sha256
    assert same.status == "ok"
    (at_other,) = other.requests
    assert "Authorization" not in at_other.headers
    assert at_other.headers["X-Trace"] == "from-session"
    assert len(server.requests) == 3
    assert all(r.headers["Authorization"] == "Bearer session-secret" for r in server.requests)


# -- timeouts -------------------------------------------------------------------------


async def test_a_stalled_transfer_times_out_and_keeps_its_part(
    server: FileServer, dest: Path
) -> None:
    server.add_generated("f.bin", 500_000)
    started = time.monotonic()
    result = await fetch_one(server.url("f.bin", stall=100_000), dest, timeout=0.3, retries=1)
    assert result.status == "failed"
    assert result.attempts == 2
    assert "no data from 127.0.0.1:" in (result.error or "")
    assert time.monotonic() - started < 10
    # Each attempt got 100 000 bytes before the stall; the retry resumed.
    assert (dest / "f.bin.part").stat().st_size == 200_000
    assert server.requests_for("f.bin")[1].headers["Range"] == "bytes=100000-"
    assert not (dest / "f.bin").exists()


async def test_a_stall_before_the_headers_times_out(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"x")
    result = await fetch_one(server.url("f.bin", delay=3), dest, timeout=0.2, retries=0)
    assert result.status == "failed"
    assert "no data from 127.0.0.1:" in (result.error or "")
    assert result.seconds < 2


async def test_a_stall_is_retried_with_range_and_completes(server: FileServer, dest: Path) -> None:
    served = server.add_generated("f.bin", 400_000)
    result = await fetch_one(server.url("f.bin", stall=150_000, times=1), dest, timeout=0.3)
    assert result.status == "ok", result.error
    assert result.attempts == 2
    assert result.sha256 == served.sha256
    first, second = server.requests_for("f.bin")
    assert "Range" not in first.headers
    assert second.headers["Range"] == "bytes=150000-"


async def test_a_slow_but_moving_transfer_does_not_time_out(server: FileServer, dest: Path) -> None:
    served = server.add_generated("f.bin", 24 * 1024)
    started = time.monotonic()
    # 24 pieces 0.05 s apart: ~1.2 s in all, four times the idle timeout.
    result = await fetch_one(server.url("f.bin", drip=0.05), dest, timeout=0.3, retries=0)
    assert result.status == "ok", result.error
    assert result.attempts == 1
    assert result.sha256 == served.sha256
    assert time.monotonic() - started > 0.3 * 2


# -- bodies that end early, resume, validators -------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_early_ending_body_is_retried_with_range(
    server: FileServer, dest: Path, chunked: bool
) -> None:
    served = server.add_generated("f.bin", 3_000_000)
    faults: dict[str, object] = {"truncate": 1_200_000, "times": 1}
    if chunked:
        faults["chunked"] = 1
    result = await fetch_one(server.url("f.bin", **faults), dest)
    assert result.status == "ok", result.error
    assert result.attempts == 2
    assert result.bytes == served.size
    assert result.sha256 == served.sha256
    first, second = server.requests_for("f.bin")
    assert "Range" not in first.headers
    assert second.headers["Range"] == "bytes=1200000-"
    assert second.headers["If-Range"] == served.etag
    assert files_under(dest) == {"f.bin"}


async def test_a_body_that_always_ends_early_fails_and_keeps_the_part(
    server: FileServer, dest: Path
) -> None:
    server.add_generated("f.bin", 300_000)
    result = await fetch_one(server.url("f.bin", truncate=1000, norange=1), dest, retries=1)
    assert result.status == "failed"
    assert result.attempts == 2
    assert "ended early" in (result.error or "")
    assert files_under(dest) == {"f.bin.part", "f.bin.part.meta"}
    assert (dest / "f.bin.part").stat().st_size == 1000


async def test_resume_sends_if_range_and_stitches_an_unchanged_file(
    server: FileServer, dest: Path
) -> None:
    served = server.add_generated("f.bin", 2_000_000)
    url = server.url("f.bin", truncate=700_000, times=1)
    first = await fetch_one(url, dest, retries=0)
    assert first.status == "failed"
    meta = json.loads((dest / "f.bin.part.meta").read_text())
    assert meta["url"] == url
    assert meta["etag"] == served.etag

    second = await fetch_one(url, dest)
    assert second.status == "ok", second.error
    assert second.sha256 == served.sha256
    request = server.requests_for("f.bin")[-1]
    assert request.headers["Range"] == "bytes=700000-"
    assert request.headers["If-Range"] == served.etag
    assert files_under(dest) == {"f.bin"}


async def test_a_file_changed_on_the_server_restarts_instead_of_stitching(
    server: FileServer, dest: Path
) -> None:
    server.add_bytes("f.bin", pattern_bytes(2_000_000, seed=1))
    url = server.url("f.bin", truncate=700_000, times=1)
    assert (await fetch_one(url, dest, retries=0)).status == "failed"
    new = pattern_bytes(2_000_000, seed=2)
    changed = server.add_bytes("f.bin", new)

    result = await fetch_one(url, dest)
    assert result.status == "ok", result.error
    assert result.sha256 == changed.sha256
    assert (dest / "f.bin").read_bytes() == new
    request = server.requests_for("f.bin")[-1]
    assert request.headers["Range"] == "bytes=700000-"
    assert request.headers["If-Range"] != changed.etag


async def test_last_modified_is_the_validator_without_a_strong_etag(
    server: FileServer, dest: Path
) -> None:
    served = server.add_generated("f.bin", 1_500_000)
    url = server.url("f.bin", truncate=600_000, times=1)
    assert (await fetch_one(url, dest, retries=0)).status == "failed"
    meta_path = dest / "f.bin.part.meta"
    meta = json.loads(meta_path.read_text())
    meta["etag"] = 'W/"weak"'
    meta_path.write_text(json.dumps(meta))
    result = await fetch_one(url, dest)
    assert result.sha256 == served.sha256
    request = server.requests_for("f.bin")[-1]
    assert request.headers["If-Range"] == meta["last_modified"]
    assert request.headers["If-Range"].endswith("GMT")


async def test_a_206_from_the_wrong_offset_is_rejected(server: FileServer, dest: Path) -> None:
    data = pattern_bytes(500_000, seed=5)
    served = server.add_bytes("f.bin", data)
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(data[:100_000])
    result = await fetch_one(server.url("f.bin", badrange=1), dest)
    assert result.status == "ok", result.error
    assert result.attempts == 2
    assert result.sha256 == served.sha256
    assert (dest / "f.bin").read_bytes() == data
    first, second = server.requests_for("f.bin")
    assert first.headers["Range"] == "bytes=100000-"
    assert "Range" not in second.headers


async def test_a_416_for_a_whole_part_counts_as_complete(server: FileServer, dest: Path) -> None:
    data = pattern_bytes(300_000, seed=6)
    served = server.add_bytes("f.bin", data)
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(data)
    result = await fetch_one(server.url("f.bin"), dest)
    assert result.status == "ok", result.error
    assert result.bytes == len(data)
    assert result.sha256 == served.sha256
    (request,) = server.requests_for("f.bin")
    assert request.headers["Range"] == f"bytes={len(data)}-"
    assert files_under(dest) == {"f.bin"}
    assert (dest / "f.bin").read_bytes() == data


async def test_a_416_for_an_oversized_part_starts_afresh(server: FileServer, dest: Path) -> None:
    data = pattern_bytes(1000, seed=7)
    served = server.add_bytes("f.bin", data)
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(b"x" * 5000)
    result = await fetch_one(server.url("f.bin"), dest)
    assert result.status == "ok", result.error
    assert result.sha256 == served.sha256
    assert (dest / "f.bin").read_bytes() == data
    assert files_under(dest) == {"f.bin"}


async def test_a_whole_part_with_a_wrong_sha256_is_not_committed(
    server: FileServer, dest: Path
) -> None:
    data = b"whole but wrong"
    server.add_bytes("f.bin", data)
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(data)
    result = await fetch_one(DownloadRequest.from_url(server.url("f.bin"), "f.bin", "0" * 64), dest)
    assert result.status == "failed"
    assert "sha256 mismatch" in (result.error or "")
    assert files_under(dest) == set()


async def test_a_200_instead_of_206_restarts_from_zero(server: FileServer, dest: Path) -> None:
    data = pattern_bytes(400_000, seed=8)
    served = server.add_bytes("f.bin", data)
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(b"stale bytes that must not survive")
    result = await fetch_one(server.url("f.bin", norange=1), dest)
    assert result.status == "ok", result.error
    assert result.attempts == 1
    assert result.sha256 == served.sha256
    assert (dest / "f.bin").read_bytes() == data
    (request,) = server.requests_for("f.bin")
    assert "Range" in request.headers


# -- bytes as served ---------------------------------------------------------------------


@pytest.mark.parametrize("auto_decompress", [True, False])
async def test_gzip_bodies_are_saved_unchanged(
    server: FileServer, dest: Path, auto_decompress: bool
) -> None:
    packed = gzip.compress(b"hello gzip " * 5000)
    served = server.add_bytes("data.txt.gz", packed)
    async with aiohttp.ClientSession(auto_decompress=auto_decompress) as session:
        (result,) = await download(
            [server.url("data.txt.gz", gzip=1)], dest, session=session, **FAST
        )
    assert result.status == "ok", result.error
    assert (dest / "data.txt.gz").read_bytes() == packed
    assert result.sha256 == served.sha256
    (request,) = server.requests
    assert request.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("faults", [{"status": 500}, {"status": 404}, {"fail": 100}])
async def test_an_error_body_is_never_saved(
    server: FileServer, dest: Path, faults: dict[str, object]
) -> None:
    server.add_bytes("f.bin", b"real")
    result = await fetch_one(server.url("f.bin", **faults), dest, retries=1)
    assert result.status == "failed"
    assert result.bytes == 0
    assert files_under(dest) == set()


async def test_after_an_error_status_the_file_holds_the_real_body(
    server: FileServer, dest: Path
) -> None:
    server.add_bytes("f.bin", b"real")
    result = await fetch_one(server.url("f.bin", fail=1, fail_status=500), dest)
    assert result.status == "ok"
    assert (dest / "f.bin").read_bytes() == b"real"


async def test_custom_headers_are_sent(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"x")
    await fetch_one(server.url("f.bin"), dest, headers={"X-Api-Key": "k1", "User-Agent": "t/1"})
    (request,) = server.requests
    assert request.headers["X-Api-Key"] == "k1"
    assert request.headers["User-Agent"] == "t/1"


# -- sha256 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 3_000_000])
async def test_a_matching_sha256_is_accepted(server: FileServer, dest: Path, size: int) -> None:
    served = server.add_generated("f.bin", size)
    result = await fetch_one(
        DownloadRequest.from_url(server.url("f.bin"), None, served.sha256), dest
    )
    assert result.status == "ok"
    assert result.sha256 == served.sha256


@pytest.mark.parametrize("size", [1000, 3_000_000])
async def test_a_sha256_mismatch_fails_and_leaves_nothing_under_the_name(
    server: FileServer, dest: Path, size: int
) -> None:
    server.add_generated("f.bin", size)
    result = await fetch_one(DownloadRequest.from_url(server.url("f.bin"), None, "a" * 64), dest)
    assert result.status == "failed"
    assert result.attempts == 1
    assert "sha256 mismatch" in (result.error or "")
    assert files_under(dest) == set()


# -- skip, overwrite, resume ---------------------------------------------------------------


async def test_an_existing_named_file_is_skipped_without_a_request(
    server: FileServer, dest: Path
) -> None:
    server.add_bytes("f.bin", b"new content")
    dest.mkdir()
    (dest / "f.bin").write_bytes(b"old")
    result = await fetch_one(DownloadRequest.from_url(server.url("f.bin"), "f.bin"), dest)
    assert (result.status, result.bytes, result.attempts) == ("skipped", 3, 0)
    assert result.ok
    assert server.hits("f.bin") == 0
    assert (dest / "f.bin").read_bytes() == b"old"


async def test_an_existing_file_named_by_the_url_is_skipped(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"new content")
    dest.mkdir()
    (dest / "f.bin").write_bytes(b"old")
    result = await fetch_one(server.url("f.bin"), dest)
    assert result.status == "skipped"
    assert (dest / "f.bin").read_bytes() == b"old"


async def test_overwrite_downloads_existing_files_again(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"new content")
    dest.mkdir()
    (dest / "f.bin").write_bytes(b"old")
    (dest / "g.bin").write_bytes(b"old")
    results = await download(
        [server.url("f.bin"), DownloadRequest.from_url(server.url("f.bin"), "g.bin")],
        dest,
        overwrite=True,
    )
    assert [r.status for r in results] == ["ok", "ok"]
    assert (dest / "f.bin").read_bytes() == b"new content"
    assert (dest / "g.bin").read_bytes() == b"new content"


async def test_rerunning_a_list_fetches_only_what_is_missing(
    server: FileServer, dest: Path
) -> None:
    for name in ("a", "b", "c"):
        server.add_bytes(name, name.encode() * 10)
    urls: list[str | DownloadRequest] = [
        server.url("a"),
        server.url("b"),
        DownloadRequest.from_url(server.url("c"), "c"),
    ]
    assert [r.status for r in await download(urls, dest)] == ["ok", "ok", "ok"]
    (dest / "b").unlink()
    second = await download(urls, dest)
    assert [r.status for r in second] == ["skipped", "ok", "skipped"]
    assert (dest / "b").read_bytes() == b"b" * 10
    assert server.hits("c") == 1


@pytest.mark.parametrize("resume", [True, False])
async def test_an_existing_part_is_resumed_unless_resume_is_off(
    server: FileServer, dest: Path, resume: bool
) -> None:
    data = pattern_bytes(250_000, seed=9)
    served = server.add_bytes("f.bin", data)
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(data[:50_000] if resume else b"garbage" * 100)
    result = await fetch_one(server.url("f.bin"), dest, resume=resume)
    assert result.status == "ok"
    assert result.sha256 == served.sha256
    assert (dest / "f.bin").read_bytes() == data
    (request,) = server.requests_for("f.bin")
    if resume:
        assert request.headers["Range"] == "bytes=50000-"
    else:
        assert "Range" not in request.headers
    assert files_under(dest) == {"f.bin"}


async def test_a_part_from_another_url_is_not_resumed(server: FileServer, dest: Path) -> None:
    data = pattern_bytes(100_000, seed=10)
    server.add_bytes("f.bin", data)
    url = server.url("f.bin")
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(b"from elsewhere")
    (dest / "f.bin.part.meta").write_text(json.dumps({"url": "http://other/f.bin"}))
    result = await fetch_one(url, dest)
    assert result.status == "ok"
    assert (dest / "f.bin").read_bytes() == data
    assert "Range" not in server.requests_for("f.bin")[0].headers


async def test_content_disposition_name_resumes_its_own_part(
    server: FileServer, dest: Path
) -> None:
    data = pattern_bytes(200_000, seed=11)
    served = server.add_bytes("download", data)
    dest.mkdir()
    (dest / "real-name.bin.part").write_bytes(data[:80_000])
    result = await fetch_one(
        server.url("download", cd='attachment; filename="real-name.bin"'), dest
    )
    assert result.status == "ok", result.error
    assert result.path == "real-name.bin"
    assert result.sha256 == served.sha256
    assert server.requests_for("download")[-1].headers["Range"] == "bytes=80000-"
    assert files_under(dest) == {"real-name.bin"}


async def test_a_folder_in_the_way_is_a_failure_not_a_crash(server: FileServer, dest: Path) -> None:
    server.add_bytes("f.bin", b"x")
    (dest / "f.bin").mkdir(parents=True)
    result = await fetch_one(DownloadRequest.from_url(server.url("f.bin"), "f.bin"), dest)
    assert result.status == "failed"
    assert "not a regular file" in (result.error or "")


# -- events ----------------------------------------------------------------------------------


async def test_every_attempt_reports_started_progress_and_one_finish(
    server: FileServer, dest: Path
) -> None:
    served = server.add_generated("f.bin", 2_000_000)
    events: list[DownloadEvent] = []
    result = await fetch_one(
        server.url("f.bin", truncate=500_000, times=1), dest, on_event=events.append
    )
    assert result.status == "ok"
    finished = [e for e in events if isinstance(e, DownloadFinished)]
    assert finished == [DownloadFinished(result)]
    assert events[-1] == finished[0]
    from asyncconc import DownloadProgress, DownloadStarted

    started = [e for e in events if isinstance(e, DownloadStarted)]
    assert [(s.resumed_from, s.total) for s in started] == [
        (0, served.size),
        (500_000, served.size),
    ]
    progress = sum(e.nbytes for e in events if isinstance(e, DownloadProgress))
    assert progress == served.size


async def test_a_stalled_response_ends_on_the_server_when_the_client_gives_up(
    server: FileServer, dest: Path
) -> None:
    server.add_generated("f.bin", 100_000)
    result = await fetch_one(server.url("f.bin", stall=1000), dest, timeout=0.2, retries=0)
    assert result.status == "failed"

    def handlers() -> list[asyncio.Task[Any]]:
        return [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "RequestHandler._handle_request"
        ]

    deadline = time.monotonic() + 5
    while handlers():  # the server notices the hang-up and stops waiting
        assert time.monotonic() < deadline, "the stalled handler outlived its client"
        await asyncio.sleep(0.01)


async def test_a_server_dribbling_tiny_pieces_is_saved_intact(
    server: FileServer, dest: Path
) -> None:
    # More small reads in one batch than one writev() takes (IOV_MAX).
    served = server.add_generated("f.bin", 250_000)
    reads = 0

    def on_event(event: DownloadEvent) -> None:
        nonlocal reads
        reads += isinstance(event, DownloadProgress)

    result = await fetch_one(
        server.url("f.bin", drip=0.00001, drip_size=100), dest, retries=0, on_event=on_event
    )
    assert result.status == "ok", result.error
    assert result.sha256 == served.sha256
    assert reads > 1024, "the test needs many small reads"


@pytest.mark.parametrize(
    ("range_header", "status", "body"),
    [
        ("bytes=2-4", 206, b"234"),
        ("bytes=-3", 206, b"789"),
        ("bytes=3-100", 206, b"3456789"),
        ("bytes=20-", 416, None),
        ("bytes=5-2", 200, b"0123456789"),  # invalid: ignored, not a crash
        ("bytes=x-", 200, b"0123456789"),
        ("bytes=0-1,4-5", 200, b"0123456789"),
        ("items=1-2", 200, b"0123456789"),
    ],
)
async def test_the_loopback_server_answers_ranges_like_a_real_server(
    server: FileServer, range_header: str, status: int, body: bytes | None
) -> None:
    server.add_bytes("digits", b"0123456789")
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url("digits"), headers={"Range": range_header}) as response,
    ):
        assert response.status == status
        if status == 416:
            assert response.headers["Content-Range"] == "bytes */10"
        else:
            assert await response.read() == body


async def test_a_slowly_dripped_60_kb_file_is_visible_in_its_part_while_in_flight(
    server: FileServer, dest: Path
) -> None:
    """Issue 7 item 4: received data is in NAME.part within about a second.

    The server drips 20 KB of the 60 KB file, then keeps the connection open
    sending nothing: the download is still in flight when the bytes must
    show up on disk (before the fix they sat in memory until the end).
    """
    served = server.add_generated("drip.bin", 60_000, seed=7)
    url = server.url("drip.bin", drip=0.02, drip_size=1000, stall=20_000)
    moved = 0
    last = asyncio.Event()

    def on_event(event: DownloadEvent) -> None:
        nonlocal moved
        if isinstance(event, DownloadProgress):
            moved += event.nbytes
            if moved >= 20_000:
                last.set()

    task = asyncio.create_task(download([url], dest, on_event=on_event, **FAST))
    try:
        await asyncio.wait_for(last.wait(), 30)
        arrived = time.monotonic()
        part = dest / "drip.bin.part"
        while not (part.exists() and part.stat().st_size == 20_000):
            assert time.monotonic() - arrived < 5, "the data is not in the .part after 5 s"
            await asyncio.sleep(0.02)
        assert not task.done()
        assert part.read_bytes() == pattern_bytes(served.size, 7)[:20_000]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert (dest / "drip.bin.part").stat().st_size == 20_000
