"""Where a download is stored: pure, synchronous name logic.

Precedence (highest first): the list's explicit name, the server's
Content-Disposition filename (RFC 6266; ``filename*`` per RFC 5987 wins over
``filename``), the last URL path segment percent-decoded (never the query),
then ``index.html``.

Every name is sanitised before use, and :func:`safe_relpath` is the only
way a name becomes a path: it refuses anything that would leave the
destination folder, so hostile headers such as ``filename="../../etc/x"``
or ``filename*=UTF-8''%2e%2e%2fx`` land as a harmless basename.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import PurePosixPath
from typing import Protocol
from urllib.parse import unquote, urlsplit

__all__ = [
    "DEFAULT_NAME",
    "NameAllocator",
    "NameClaimer",
    "filename_from_content_disposition",
    "filename_from_url",
    "safe_relpath",
    "sanitize_component",
]

DEFAULT_NAME = "index.html"
PART_SUFFIX = ".part"
META_SUFFIX = ".part.meta"
# Room kept free in every component for ".part.meta" and a "-NNN" collision
# suffix, so the temporary and renamed names also fit the limit.
_RESERVED_BYTES = len(META_SUFFIX) + 8
_NAME_MAX = 255
# Separators, C0/C1 controls, and lone surrogates (undecodable input bytes,
# which could not even be encoded into a file name).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]|[\x80-\x9f]|[\ud800-\udfff]")
# One ``; name=value`` parameter; the value a quoted-string or a bare run.
_CD_PARAM = re.compile(r';\s*([^\s;=]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[1-9]|lpt[1-9])(\..*)?$", re.IGNORECASE)


def name_max(folder: str | os.PathLike[str] | None = None) -> int:
    """The file system's limit on one name, in bytes (255 where unknown)."""
    if folder is not None:
        try:
            return min(os.pathconf(folder, "PC_NAME_MAX"), 1024)
        except (OSError, ValueError, AttributeError):
            pass
    return _NAME_MAX


def sanitize_component(name: str, *, limit: int = _NAME_MAX) -> str:
    """One safe file name: no separators, controls, ``.``/``..``; fits ``limit``.

    Returns ``""`` when nothing usable is left, so callers can fall back.
    """
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE.sub("_", name).strip().strip(".")
    # A leading dash would read as an option to shell tools; a leading dot
    # would hide the file. Neither is worth keeping from an untrusted server.
    name = name.lstrip("-").strip()
    if name in ("", ".", ".."):
        return ""
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    return _shorten(name, max(limit - _RESERVED_BYTES, 16))


def _shorten(name: str, limit: int) -> str:
    """Cut ``name`` to ``limit`` UTF-8 bytes, keeping a short extension."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 16 or not stem:
        stem, ext = name, ""
    tail = f".{ext}" if ext else ""
    room = limit - len(tail.encode())
    cut = stem.encode()[:room].decode("utf-8", errors="ignore")
    return cut.rstrip(". ") + tail


def safe_relpath(name: str, *, limit: int = _NAME_MAX) -> PurePosixPath | None:
    """A relative path inside the destination, or ``None`` if ``name`` escapes it.

    Used for the list's explicit names, which may hold sub-folders
    (``docs/a.pdf``). Absolute paths, ``..`` components and empty results
    are refused rather than repaired: a list that asks to write outside the
    folder is wrong, and the user should hear so.
    """
    if not name or "\x00" in name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return None
    parts = re.split(r"[/\\]+", name)
    if any(part in ("..",) for part in parts):
        return None
    clean = [sanitize_component(part, limit=limit) for part in parts if part not in ("", ".")]
    if not clean or any(part == "" for part in clean):
        return None
    return PurePosixPath(*clean)


def filename_from_content_disposition(value: str | None) -> str | None:
    """The basename a Content-Disposition header proposes, or ``None``.

    ``filename*`` (RFC 5987, e.g. ``UTF-8''na%C3%AFve.txt``) wins over
    ``filename`` (RFC 6266 section 4.3). Only the last path segment is kept,
    whatever separators the server used.

    Parsed here rather than with :mod:`email`: ``Message.get_param`` folds
    ``filename*`` into ``filename``, returns the plain ``filename`` first when
    both are sent, and percent-decodes as Latin-1 (``naÃ¯ve.txt``).
    """
    if not value:
        return None
    params: dict[str, str] = {}
    for match in _CD_PARAM.finditer(value):
        raw = match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.setdefault(match.group(1).lower(), raw)
    candidate: str | None = None
    if extended := params.get("filename*"):
        candidate = _decode_rfc5987(extended)
    if not candidate:
        candidate = params.get("filename")
    if not candidate:
        return None
    basename = re.split(r"[/\\]", candidate)[-1]
    return basename or None


def _decode_rfc5987(value: str) -> str | None:
    charset, sep, rest = value.partition("'")
    if not sep:
        return unquote(value)
    _lang, sep, encoded = rest.partition("'")
    if not sep:
        return None
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        return None


def filename_from_url(url: str) -> str:
    """The last path segment of ``url``, percent-decoded; never the query."""
    path = urlsplit(url).path
    segment = path.rsplit("/", 1)[-1]
    return unquote(segment, errors="replace")


def choose_name(url: str, content_disposition: str | None = None, *, limit: int = _NAME_MAX) -> str:
    """The sanitised basename for ``url`` when the list gave none."""
    for candidate in (
        filename_from_content_disposition(content_disposition),
        filename_from_url(url),
    ):
        if candidate:
            clean = sanitize_component(candidate, limit=limit)
            if clean:
                return clean
    return DEFAULT_NAME


class NameClaimer(Protocol):
    """Hands out distinct names for one run; see :class:`NameAllocator`.

    Asynchronous so that downloads sharded over worker processes can claim
    their names from the one allocator in the parent.
    """

    async def aclaim(self, wanted: PurePosixPath, *, first: bool = False) -> PurePosixPath:
        """A free name like ``wanted``; ``first``: the download's first claim."""
        ...

    def release(self, path: PurePosixPath) -> None: ...


class NameAllocator:
    """Hands out distinct relative paths within one run.

    Two lines that map to the same name both keep their data: the second
    gets ``stem-2.ext``, the third ``stem-3.ext``, and so on. Names are
    compared case-insensitively so the result is safe on case-insensitive
    file systems too. A name also reserves its ``.part`` and ``.part.meta``
    files: a line named ``a.bin.part`` next to a line saving ``a.bin`` would
    otherwise be deleted or overwritten by the other's temporary file.
    """

    def __init__(self) -> None:
        # The claimed names, case-folded; a name's .part and .part.meta are
        # implied (checked by _free), not stored: a third of the memory on a
        # list of 20,000 lines.
        self._taken: set[str] = set()

    def claim(self, path: PurePosixPath) -> PurePosixPath:
        name = str(path)
        got = self.claim_name(name)
        return path if got == name else PurePosixPath(got)

    def claim_name(self, name: str) -> str:
        """:meth:`claim` of a relative path written as a ``/``-separated string."""
        candidate = name
        folder, slash, base = name.rpartition("/")
        n = 1
        while not self._free(candidate.casefold()):
            n += 1
            stem, dot, ext = base.rpartition(".")
            if not dot or not stem:
                stem, ext = base, ""
            candidate = f"{folder}{slash}{stem}-{n}" + (f".{ext}" if ext else "")
        self._taken.add(candidate.casefold())
        return candidate

    async def aclaim(self, wanted: PurePosixPath, *, first: bool = False) -> PurePosixPath:
        return self.claim(wanted)

    def release(self, path: PurePosixPath) -> None:
        self.release_name(str(path))

    def release_name(self, name: str) -> None:
        self._taken.discard(name.casefold())

    def _free(self, key: str) -> bool:
        """Whether ``key``, ``key.part`` and ``key.part.meta`` are all unclaimed.

        That is: ``key`` is no claimed name, nor such a name's ``.part`` or
        ``.part.meta``, and no claimed name is ``key.part`` or
        ``key.part.meta`` (``x.part`` can never equal ``y.part.meta``).
        """
        taken = self._taken
        if key in taken or key + PART_SUFFIX in taken or key + META_SUFFIX in taken:
            return False
        for suffix in (PART_SUFFIX, META_SUFFIX):
            if key.endswith(suffix) and key[: -len(suffix)] in taken:
                return False
        return True
