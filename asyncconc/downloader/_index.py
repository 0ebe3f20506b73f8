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
  request, as a file with no record does). Records are gathered and
  appended together, at most :data:`FLUSH_DELAY` seconds after the first of
  them and when the run ends (one ``write`` for many files instead of an
  open, a write and a close each), so a crash or SIGKILL loses at most that
  much time's records; never a file. A torn last line is ignored. A
  record is trusted only while the file still has the recorded size and
  modification time, so a file edited or replaced since is not taken as
  complete, and a record never vouches for another URL.

The index only grows by one line per saved file; deleting it is always safe
(the next run asks the server once per file again).
"""

from __future__ import annotations

import asyncio
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
# Seconds a new record may wait in memory before it is appended to the index.
FLUSH_DELAY = 0.25


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
    """The records of one folder, read once; new records are appended.

    Lookups (:meth:`get`, :meth:`owner`) see what earlier runs saved, never
    the records this run adds.
    """

    def __init__(self, dest: Path, records: dict[str, SavedRecord]) -> None:
        self.dest = dest
        self._by_url = records
        self._by_path = {r.path.as_posix().casefold(): r for r in records.values()}
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._fd: int | None = None

    @classmethod
    def load(cls, dest: Path, *, upto: int | None = None) -> SavedIndex:
        """The records in ``dest``'s index; only its first ``upto`` bytes if given.

        ``upto`` is the index's size when a run began: the worker processes
        of one ``--workers`` run start at different times, and records that
        another worker of the same run appended meanwhile must not change
        which names this one chooses.
        """
        records: dict[str, SavedRecord] = {}
        try:
            with open(dest / INDEX_NAME, "rb") as fh:
                data = fh.read() if upto is None else fh.read(upto)
        except OSError:
            data = b""
        text = data.decode("utf-8", errors="replace")
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
        stat: tuple[int, int] | None = None,
    ) -> None:
        """Record that ``path`` (complete, in place) was saved from ``url``.

        ``stat``: the file's (size, mtime_ns) when the caller knows them
        (read before its descriptor was closed); else it is looked up.
        The line reaches the index file within :data:`FLUSH_DELAY` seconds
        (or at :meth:`close`). Best effort: a folder that refuses the index
        only loses the shortcut, never a download.
        """
        if stat is None:
            try:
                st = os.lstat(self.dest / path)
            except OSError:
                return
            stat = (st.st_size, st.st_mtime_ns)
        size, mtime_ns = stat
        line = json.dumps(
            {
                "url": url,
                "path": path.as_posix(),
                "size": size,
                "mtime_ns": mtime_ns,
                "etag": etag,
                "last_modified": last_modified,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        self._pending.append(line)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()  # no loop to wait on: write it now
            else:
                self._timer = loop.call_later(FLUSH_DELAY, self.flush)
        # Not added to this run's lookups: which name a line gets must not
        # depend on whether another line of the same URL happened to finish
        # first. The next run reads it.

    def flush(self) -> None:
        """Append the gathered records in one write (O_APPEND: lines of
        several processes never interleave)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if not self._pending:
            return
        data = "".join(line + "\n" for line in self._pending)
        self._pending.clear()
        with contextlib.suppress(OSError):
            if self._fd is None:
                self._fd = os.open(self.dest / INDEX_NAME, _OPEN_FLAGS, 0o644)
            view = memoryview(data.encode("utf-8", errors="surrogateescape"))
            while view:
                view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        """Write what is gathered and close the index file; idempotent."""
        self.flush()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


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
