"""Files under a served folder, opened so that nothing outside it is served.

Checking a path (``resolve()``, ``is_relative_to``) and opening it later by
name leaves a window: swap a folder inside DIR for a symlink to ``/etc`` in
between (``renameat2(RENAME_EXCHANGE)``) and the check passes for one file
while the open reads another. So a file is never opened by its full path.
:class:`Folder` holds a descriptor of DIR, opened once when the server starts
(a relative DIR means the working directory at start, whatever ``chdir``
comes later), and walks a request's path one component at a time with
``openat(..., O_NOFOLLOW)`` from it: every step is relative to a descriptor
already known to be inside DIR, and a symlink anywhere on the way (planted,
or swapped in mid-walk) makes the step fail instead of leading out. What is
served is what was opened, checked with ``fstat`` (a regular file), and read
through that descriptor only.

Symlinks are therefore never followed, also those pointing inside DIR (as
nginx's ``disable_symlinks on``): a clear rule that no interleaving of
renames can get around.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BadPathError", "Folder", "Opened"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# What the walk may meet that simply means "no such file here".
_NOT_FOUND = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EACCES, errno.ENXIO}
)


class BadPathError(ValueError):
    """A request path no file can have (NUL, ``..``, empty components)."""


@dataclass(frozen=True, slots=True)
class Opened:
    """A regular file under the folder: its descriptor (the caller closes it)."""

    fd: int
    stat: os.stat_result


class Folder:
    """A folder opened once; files under it opened without following links."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root).resolve(strict=True)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def listing(self, name: str) -> list[tuple[str, bool]] | None:
        """Names in the folder ``name`` (``""``: DIR itself), folders flagged.

        The same walk as :meth:`open`: no symlink is followed on the way, and
        symlinks in the folder are left out of the list (they would not be
        served). ``None``: no such folder.
        """
        if "\x00" in name:
            raise BadPathError("the path contains a NUL byte")
        parts = [part for part in name.split("/") if part]
        if any(part in (".", "..") for part in parts):
            raise BadPathError("the path has a '.' or '..' component")
        opened: list[int] = []
        try:
            where = self.fd
            for part in parts:
                where = os.open(part, _DIR_FLAGS, dir_fd=where)
                opened.append(where)
            # scandir on a descriptor consumes it: give it a copy.
            with os.scandir(os.dup(where)) as entries:
                found = [
                    (entry.name, entry.is_dir(follow_symlinks=False))
                    for entry in entries
                    if not entry.is_symlink()
                    and (
                        entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False)
                    )
                ]
        except OSError as exc:
            if exc.errno in _NOT_FOUND:
                return None
            raise
        finally:
            for each in opened:
                os.close(each)
        return sorted(found, key=lambda item: (not item[1], item[0]))

    def open(self, name: str) -> Opened | None:
        """Open ``name`` (``a/b.txt``) under the folder; ``None``: no such file.

        Raises :class:`BadPathError` for a path that cannot name a file.
        """
        if "\x00" in name:
            raise BadPathError("the path contains a NUL byte")
        if name == "" or name.endswith("/"):
            return None  # a folder's URL names no file
        parts = name.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise BadPathError("the path has an empty, '.' or '..' component")
        opened: list[int] = []
        try:
            where = self.fd
            for part in parts[:-1]:
                where = os.open(part, _DIR_FLAGS, dir_fd=where)
                opened.append(where)
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=where)
        except OSError as exc:
            if exc.errno in _NOT_FOUND:
                return None
            raise
        finally:
            for each in opened:
                os.close(each)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return Opened(fd, info)
