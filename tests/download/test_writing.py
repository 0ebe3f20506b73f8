""".part files: ``asyncconc.downloader._writing`` (no network)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path

import pytest

from asyncconc import IntegrityError, WriteError
from asyncconc.downloader._writing import (
    FLUSH_BYTES,
    INLINE_BYTES,
    PartFile,
    ResumeInfo,
    read_resume_info,
)
from asyncconc.testing import pattern_bytes
from tests.conftest import files_under

URL = "http://h/file.bin"


def new_part(final: Path, *, remember: bool = True) -> PartFile:
    return PartFile(final, url=URL, etag='"v1"', last_modified=None, remember=remember)


async def write_all(part: PartFile, data: bytes, piece: int = 64 * 1024) -> None:
    for pos in range(0, len(data), piece):
        await part.write(data[pos : pos + piece])


@pytest.mark.parametrize("size", [0, 10, FLUSH_BYTES - 1, FLUSH_BYTES, 3 * FLUSH_BYTES + 12345])
async def test_commit_renames_part_to_the_name_with_exact_bytes_and_digest(
    tmp_path: Path, size: int
) -> None:
    data = pattern_bytes(size, seed=size)
    final = tmp_path / "file.bin"
    part = new_part(final)
    await part.start(0)
    await write_all(part, data)
    assert part.size == size
    digest = await part.commit(
        expected_size=size, expected_sha256=hashlib.sha256(data).hexdigest().upper()
    )
    assert digest == hashlib.sha256(data).hexdigest()
    assert final.read_bytes() == data
    assert files_under(tmp_path) == {"file.bin"}


async def test_keep_saves_what_arrived_with_the_validator_for_a_resume(tmp_path: Path) -> None:
    data = pattern_bytes(FLUSH_BYTES + 5000, seed=1)
    final = tmp_path / "file.bin"
    part = new_part(final)
    await part.start(0)
    await write_all(part, data)  # one batch on disk or in flight, the rest buffered
    part.keep()
    assert not final.exists()
    assert (tmp_path / "file.bin.part").read_bytes() == data
    info = read_resume_info(final)
    assert info == ResumeInfo(size=len(data), url=URL, etag='"v1"', last_modified=None)
    assert info.validator == '"v1"'
    part.keep()  # idempotent


async def test_keep_before_any_disk_write_still_saves_the_buffer(tmp_path: Path) -> None:
    final = tmp_path / "small.bin"
    part = new_part(final)
    await part.start(0)
    await part.write(b"abc")
    part.keep()
    assert (tmp_path / "small.bin.part").read_bytes() == b"abc"


async def test_discard_removes_part_and_sidecar(tmp_path: Path) -> None:
    final = tmp_path / "file.bin"
    part = new_part(final)
    await part.start(0)
    await write_all(part, pattern_bytes(2 * FLUSH_BYTES, seed=2))
    part.discard()
    assert files_under(tmp_path) == set()


async def test_appending_hashes_the_existing_prefix(tmp_path: Path) -> None:
    data = pattern_bytes(2 * FLUSH_BYTES + 7, seed=3)
    final = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(data[:1000])
    part = new_part(final)
    await part.start(1000)
    await write_all(part, data[1000:])
    digest = await part.commit(expected_size=len(data), expected_sha256=None)
    assert digest == hashlib.sha256(data).hexdigest()
    assert final.read_bytes() == data


async def test_appending_to_a_part_of_another_size_is_a_write_error(tmp_path: Path) -> None:
    final = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"12345")
    part = new_part(final)
    with pytest.raises(WriteError):
        await part.start(3)


async def test_wrong_size_deletes_the_data(tmp_path: Path) -> None:
    final = tmp_path / "file.bin"
    part = new_part(final)
    await part.start(0)
    await part.write(b"short")
    with pytest.raises(IntegrityError, match="received 5 bytes, server announced 6"):
        await part.commit(expected_size=6, expected_sha256=None)
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize("size", [100, 3 * FLUSH_BYTES])
async def test_sha256_mismatch_leaves_nothing_under_the_name(tmp_path: Path, size: int) -> None:
    final = tmp_path / "file.bin"
    final_data = pattern_bytes(size, seed=4)
    part = new_part(final)
    await part.start(0)
    await write_all(part, final_data)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        await part.commit(expected_size=size, expected_sha256="0" * 64)
    assert files_under(tmp_path) == set()


async def test_without_remember_no_sidecar_is_written(tmp_path: Path) -> None:
    final = tmp_path / "file.bin"
    part = new_part(final, remember=False)
    await part.start(0)
    await part.write(b"abc")
    part.keep()
    assert files_under(tmp_path) == {"file.bin.part"}
    assert read_resume_info(final) == ResumeInfo(3, None, None, None)


def test_resume_info_prefers_a_strong_etag_then_last_modified(tmp_path: Path) -> None:
    final = tmp_path / "f"
    assert read_resume_info(final) is None
    (tmp_path / "f.part").write_bytes(b"12")
    meta = tmp_path / "f.part.meta"
    meta.write_text(json.dumps({"url": URL, "etag": 'W/"weak"', "last_modified": "Tue"}))
    info = read_resume_info(final)
    assert info is not None
    assert info.size == 2
    assert info.validator == "Tue"
    meta.write_text(json.dumps({"url": URL, "etag": '"strong"', "last_modified": "Tue"}))
    assert read_resume_info(final) == ResumeInfo(2, URL, '"strong"', "Tue")
    meta.write_text("not json [")
    assert read_resume_info(final) == ResumeInfo(2, None, None, None)
    meta.write_text("[1, 2]")
    assert read_resume_info(final) == ResumeInfo(2, None, None, None)


async def test_sub_folders_are_created(tmp_path: Path) -> None:
    final = tmp_path / "a" / "b" / "c.bin"
    part = new_part(final)
    await part.start(0)
    await part.write(b"x")
    await part.commit(expected_size=1, expected_sha256=None)
    assert files_under(tmp_path) == {"a/b/c.bin"}


async def test_an_unwritable_folder_is_a_write_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_bytes(b"a file, not a folder")
    part = new_part(tmp_path / "blocker" / "x.bin")
    await part.start(0)
    await part.write(b"x")
    with pytest.raises(WriteError):
        await part.commit(expected_size=None, expected_sha256=None)


@pytest.mark.parametrize("piece", [1, 100, 700])
async def test_thousands_of_small_chunks_are_written(tmp_path: Path, piece: int) -> None:
    # More buffers than one writev() takes (IOV_MAX, 1024 on Linux).
    data = pattern_bytes(5000 * piece, seed=piece)
    final = tmp_path / "file.bin"
    part = new_part(final)
    await part.start(0)
    await write_all(part, data, piece=piece)
    digest = await part.commit(expected_size=len(data), expected_sha256=None)
    assert digest == hashlib.sha256(data).hexdigest()
    assert final.read_bytes() == data


async def test_keep_saves_thousands_of_small_chunks(tmp_path: Path) -> None:
    data = pattern_bytes(3000 * 10, seed=12)
    final = tmp_path / "file.bin"
    part = new_part(final)
    await part.start(0)
    await write_all(part, data, piece=10)
    part.keep()
    assert (tmp_path / "file.bin.part").read_bytes() == data


# Above INLINE_BYTES: smaller files are written on the loop, with no job.
@pytest.mark.parametrize("size", [INLINE_BYTES + 10, 3 * FLUSH_BYTES])
async def test_keep_after_a_cancel_while_the_write_was_queued_does_not_hang(
    tmp_path: Path, size: int
) -> None:
    # Every worker thread busy: the PartFile's job waits in the executor's
    # queue when its task is cancelled. keep() must still save the data.
    loop = asyncio.get_running_loop()
    release = threading.Event()
    blockers = [loop.run_in_executor(None, release.wait) for _ in range(64)]
    data = pattern_bytes(size, seed=size)
    part = new_part(tmp_path / "file.bin")
    try:
        await part.start(0)
        task = asyncio.create_task(write_and_commit(part, data))
        for _ in range(5):
            await asyncio.sleep(0)  # the task reaches its queued job
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        keeper = threading.Thread(target=part.keep, daemon=True)
        keeper.start()
        keeper.join(10)
        assert not keeper.is_alive(), "keep() hangs on a job that will never run"
    finally:
        release.set()
        await asyncio.gather(*blockers)
    # What was handed over is saved for a resume, or (the commit's job had
    # started) the file is complete.
    final = tmp_path / "file.bin"
    if final.exists():
        assert final.read_bytes() == data
    else:
        assert part.size > 0
        assert (tmp_path / "file.bin.part").read_bytes() == data[: part.size]


async def write_and_commit(part: PartFile, data: bytes) -> None:
    await write_all(part, data)
    await part.commit(expected_size=len(data), expected_sha256=None)


async def test_a_small_file_is_written_without_a_thread_hop_or_a_sidecar(tmp_path: Path) -> None:
    # Every executor thread blocked: a small file must still commit, so it
    # cannot have waited for a thread; and it never needed a .meta file.
    loop = asyncio.get_running_loop()
    release = threading.Event()
    blockers = [loop.run_in_executor(None, release.wait) for _ in range(64)]
    data = pattern_bytes(INLINE_BYTES, seed=3)
    part = new_part(tmp_path / "small.bin")
    try:
        await part.start(0)
        await write_all(part, data)
        digest = await asyncio.wait_for(
            part.commit(expected_size=len(data), expected_sha256=None), 10
        )
    finally:
        release.set()
        await asyncio.gather(*blockers)
    assert digest == hashlib.sha256(data).hexdigest()
    assert files_under(tmp_path) == {"small.bin"}
    assert (tmp_path / "small.bin").read_bytes() == data


@pytest.mark.parametrize("size", [10, 3 * FLUSH_BYTES + 5])
async def test_without_checksum_no_digest_but_the_same_bytes(tmp_path: Path, size: int) -> None:
    data = pattern_bytes(size, seed=4)
    part = PartFile(tmp_path / "f.bin", url=URL, etag=None, last_modified=None, checksum=False)
    await part.start(0)
    await write_all(part, data)
    assert await part.commit(expected_size=size, expected_sha256=None) is None
    assert (tmp_path / "f.bin").read_bytes() == data


async def test_a_slow_small_download_reaches_the_part_within_about_a_second(
    tmp_path: Path,
) -> None:
    """Issue 7 item 4: data is on disk ~FLUSH_AGE after it arrived, not at the end."""
    from asyncconc.downloader._writing import FLUSH_AGE

    final = tmp_path / "slow.bin"
    part = new_part(final)
    data = pattern_bytes(60_000, seed=4)
    await part.start(0)
    await part.write(data[:1000])  # then nothing more arrives for a while
    arrived = asyncio.get_running_loop().time()
    while not (final.with_name("slow.bin.part").exists() and part_size(final) == 1000):
        assert asyncio.get_running_loop().time() - arrived < FLUSH_AGE + 5, "never flushed"
        await asyncio.sleep(0.02)
    # More data, then the rest: the commit completes the same file.
    await write_all(part, data[1000:], piece=997)
    assert (
        await part.commit(expected_size=len(data), expected_sha256=None)
        == hashlib.sha256(data).hexdigest()
    )
    assert final.read_bytes() == data
    assert files_under(tmp_path) == {"slow.bin"}


def part_size(final: Path) -> int:
    try:
        return final.with_name(final.name + ".part").stat().st_size
    except FileNotFoundError:
        return -1


async def test_a_file_completed_within_the_second_is_never_seen_as_part(tmp_path: Path) -> None:
    """The fast path stays: a quick file is written once, at commit, in one go."""
    final = tmp_path / "quick.bin"
    part = new_part(final)
    data = pattern_bytes(200_000, seed=5)
    await part.start(0)
    await write_all(part, data)
    assert not final.with_name("quick.bin.part").exists()
    await part.commit(expected_size=len(data), expected_sha256=None)
    assert final.read_bytes() == data


async def test_a_flush_by_age_is_kept_on_cancel(tmp_path: Path) -> None:
    final = tmp_path / "k.bin"
    part = new_part(final)
    await part.start(0)
    await part.write(b"a" * 500)
    deadline = asyncio.get_running_loop().time() + 10
    while part_size(final) != 500:
        assert asyncio.get_running_loop().time() < deadline, "never flushed"
        await asyncio.sleep(0.02)
    await part.write(b"b" * 300)
    part.keep()
    assert final.with_name("k.bin.part").read_bytes() == b"a" * 500 + b"b" * 300


@pytest.mark.parametrize("size", [100, 3 * FLUSH_BYTES])
async def test_leftovers_of_an_earlier_run_are_replaced_not_reused(
    tmp_path: Path, size: int
) -> None:
    # A stale .part (longer than the new file) and a stale sidecar from
    # another URL: the fresh file is created anew (O_EXCL after removing
    # them), so neither old bytes nor the old validator survive.
    final = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"old" * 100_000)
    (tmp_path / "f.bin.part.meta").write_text('{"url": "http://old.example/", "etag": "\\"x\\""}')
    data = pattern_bytes(size, seed=9)
    part = new_part(final)
    await part.start(0)
    await write_all(part, data)
    await part.commit(expected_size=size, expected_sha256=None)
    assert final.read_bytes() == data
    assert files_under(tmp_path) == {"f.bin"}


async def test_a_missing_sub_folder_is_made_for_the_part(tmp_path: Path) -> None:
    final = tmp_path / "a" / "b" / "f.bin"
    part = new_part(final)
    await part.start(0)
    await write_all(part, b"in a sub-folder")
    await part.commit(expected_size=15, expected_sha256=None)
    assert final.read_bytes() == b"in a sub-folder"
