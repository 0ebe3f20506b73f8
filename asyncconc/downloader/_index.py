"""What this tool saved before: URL -> (name, size, validator), across runs.

A rerun must skip a complete file without asking the server, also when its
name came from the server (``Content-Disposition``) or from a collision
(``a-2.txt``). That needs URL -> name *before* any request, so it is kept in
one small index per folder, ``DIR/.asyncconc-index.jsonl``, rather than in
extended attributes on each file (``user.xdg.origin.url``, as curl and wget
``--xattr`` do):

* **Lookup.** An xattr answers "which URL is this file from?", not "which
  file is this URL in?"; the index is read once per run (one file, a dict).
* **Any file system.** Extended attributes are missing or refused on tmpfs
  before Linux 6.6, vfat/exFAT, many NFS and SMB mounts; the index is a
  plain file.
* **Concurrent runs and ``--workers``.** Each record is one line appended
  with a single ``write()`` on an ``O_APPEND`` descriptor, by whichever
  process committed the file (a worker, the parent, another run), so writers
  never need to coordinate and never interleave within a line on a local
  file system. The last record for a URL wins.
* **Crash safety.** A record is appended after the file is renamed into
  place: a crash in between loses only the record (that URL then costs one
  request, as a file with no record does). A torn last line is ignored. A
  record is trusted only while the file still has the recorded size and
  modification time, so a file edited or replaced since is not taken as
  complete, and a record never vouches for another URL.

The index only grows by one line per saved file; deleting it is always safe
(the next run asks the server once per file again).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from asyncconc.downloader._naming import safe_relpath

__all__ = ["INDEX_NAME", "SavedIndex", "SavedRecord"]

INDEX_NAME = ".asyncconc-index.jsonl"
_OPEN_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_APPEND
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


@dataclass(frozen=True, slots=True)
class SavedRecord:
    """One file saved from ``url``: where, how big, and its validator."""

    url: str
    path: PurePosixPath
    size: int
    mtime_ns: int
    etag: str | None
    last_modified: str | None

    def matches(self, dest: Path) -> bool:
        """The file is still the one saved: same size and modification time."""
        try:
            stat = os.lstat(dest / self.path)
        except OSError:
            return False
        return stat.st_size == self.size and stat.st_mtime_ns == self.mtime_ns


class SavedIndex:
    """The records of one folder, read once; new records are appended."""

    def __init__(self, dest: Path, records: dict[str, SavedRecord]) -> None:
        self.dest = dest
        self._by_url = records
        self._by_path = {r.path.as_posix().casefold(): r for r in records.values()}

    @classmethod
    def load(cls, dest: Path) -> SavedIndex:
        records: dict[str, SavedRecord] = {}
        try:
            text = (dest / INDEX_NAME).read_text("utf-8", errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            record = _parse(line)
            if record is not None:
                records[record.url] = record
        return cls(dest, records)

    def get(self, url: str) -> SavedRecord | None:
        """The record of ``url`` if its file is still as saved."""
        record = self._by_url.get(url)
        return record if record is not None and record.matches(self.dest) else None

    def owner(self, path: PurePosixPath) -> str | None:
        """The URL whose saved file ``path`` still is, if any."""
        record = self._by_path.get(path.as_posix().casefold())
        return record.url if record is not None and record.matches(self.dest) else None

    def add(
        self,
        url: str,
        path: PurePosixPath,
        *,
        etag: str | None,
        last_modified: str | None,
    ) -> None:
        """Record that ``path`` (complete, in place) was saved from ``url``.

        Best effort: a folder that refuses the index only loses the
        shortcut, never a download.
        """
        try:
            stat = os.lstat(self.dest / path)
        except OSError:
            return
        record = SavedRecord(url, path, stat.st_size, stat.st_mtime_ns, etag, last_modified)
        line = json.dumps(
            {
                "url": url,
                "path": path.as_posix(),
                "size": record.size,
                "mtime_ns": record.mtime_ns,
                "etag": etag,
                "last_modified": last_modified,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        with contextlib.suppress(OSError):
            fd = os.open(self.dest / INDEX_NAME, _OPEN_FLAGS, 0o644)
            try:
                os.write(fd, (line + "\n").encode("utf-8", errors="surrogateescape"))
            finally:
                os.close(fd)
        self._by_url[url] = record
        self._by_path[path.as_posix().casefold()] = record


def _parse(line: str) -> SavedRecord | None:
    try:
        data = json.loads(line)
        url, path, size, mtime_ns = data["url"], data["path"], data["size"], data["mtime_ns"]
        etag, last_modified = data.get("etag"), data.get("last_modified")
    except (ValueError, KeyError, TypeError):
        return None  # a torn or foreign line
    if not (isinstance(url, str) and isinstance(path, str)):
        return None
    if not (isinstance(size, int) and isinstance(mtime_ns, int)):
        return None
    rel = safe_relpath(path)
    if rel is None or rel.as_posix() != path:
        return None  # never trust a path that would leave the folder
    return SavedRecord(
        url,
        rel,
        size,
        mtime_ns,
        etag if isinstance(etag, str) else None,
        last_modified if isinstance(last_modified, str) else None,
    )
