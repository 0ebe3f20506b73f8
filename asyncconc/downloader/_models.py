"""Values that go in and out of the downloader: requests, results, events."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

from asyncconc.downloader._naming import safe_relpath

__all__ = [
    "DownloadEvent",
    "DownloadFinished",
    "DownloadProgress",
    "DownloadRequest",
    "DownloadResult",
    "DownloadStarted",
    "Status",
    "parse_url_list",
]

Status = Literal["ok", "skipped", "failed"]
# A DownloadRequest's fields: url, name (posix), sha256, line, problem, checked.
WireRequest = tuple[str, str | None, str | None, int | None, str | None, bool]
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_BAD_URL_CHARS = re.compile(r"[\s\x00-\x1f]")


@dataclass(frozen=True, slots=True)
class DownloadRequest:
    """One URL to fetch, with an optional name and sha256 to verify.

    ``problem`` is set when the request cannot be attempted (bad scheme, a
    name that would leave the folder, ...); the downloader then reports it as
    failed without touching the network. Build requests with
    :meth:`from_line` or :meth:`from_url` to get that validation.
    """

    url: str
    name: PurePosixPath | None = None
    sha256: str | None = None
    line: int | None = None
    problem: str | None = None
    # Set by from_url(): the downloader then trusts the checks made there
    # instead of repeating them (a request built with the plain constructor
    # is checked again before use).
    checked: bool = dataclass_field(default=False, init=False, repr=False, compare=False)

    @classmethod
    def from_url(
        cls,
        url: str,
        name: str | None = None,
        sha256: str | None = None,
        *,
        line: int | None = None,
    ) -> DownloadRequest:
        problem = url_problem(url)
        relpath: PurePosixPath | None = None
        if problem is None and name is not None:
            relpath = safe_relpath(name)
            if relpath is None:
                problem = f"name {name!r} is not a relative path inside the output folder"
        if problem is None and sha256 is not None and not _SHA256.match(sha256):
            problem = f"sha256 {sha256!r} is not 64 hex digits"
        where = f"line {line}: " if line is not None else ""
        request = cls(
            url=url,
            name=relpath,
            sha256=sha256.lower() if sha256 and problem is None else None,
            line=line,
            problem=f"{where}{problem}" if problem else None,
        )
        object.__setattr__(request, "checked", True)
        return request

    @classmethod
    def from_line(cls, text: str, line: int) -> DownloadRequest | None:
        """Parse ``URL [NAME] [sha256=HEX]``; ``None`` for blanks and comments."""
        fields = text.split()
        if not fields or fields[0].startswith("#"):
            return None
        return cls._from_fields(fields, line)

    def _wire(self) -> WireRequest:
        """The fields as plain values, for a worker process (:mod:`._sharded`).

        No path object to rebuild until the worker uses it (the pickle is
        0.83x as large): a worker unpickling its 10,000 requests at once kept
        ~4 MiB more peak memory for the rest of the run.
        """
        name = None if self.name is None else self.name.as_posix()
        return (self.url, name, self.sha256, self.line, self.problem, self.checked)

    @classmethod
    def _from_wire(cls, wire: WireRequest) -> DownloadRequest:
        """The request :meth:`_wire` gave (``checked`` included)."""
        url, name, sha256, line, problem, checked = wire
        path = None if name is None else PurePosixPath(name)
        request = cls(url=url, name=path, sha256=sha256, line=line, problem=problem)
        if checked:
            object.__setattr__(request, "checked", True)
        return request

    @classmethod
    def _from_fields(cls, fields: list[str], line: int) -> DownloadRequest:
        """:meth:`from_line` of a line already split (at least one field)."""
        url, rest = fields[0], fields[1:]
        name: str | None = None
        sha256: str | None = None
        for field in rest:
            if field.lower().startswith("sha256="):
                if sha256 is not None:
                    return cls(url, line=line, problem=f"line {line}: sha256 given twice")
                sha256 = field.split("=", 1)[1]
            elif name is None:
                name = field
            else:
                return cls(url, line=line, problem=f"line {line}: unexpected extra field {field!r}")
        return cls.from_url(url, name, sha256, line=line)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be downloaded, or ``None`` if it can."""
    if not url.isascii():
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: bytes that were not UTF-8 (stdin, surrogateescape).
            return f"invalid URL {url!r}: not valid UTF-8 text"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        return f"invalid URL {url!r}: {exc}"
    del port
    if not parts.scheme:
        return f"invalid URL {url!r}: no scheme (expected http:// or https://)"
    if parts.scheme.lower() not in ("http", "https"):
        return f"unsupported scheme {parts.scheme!r} in {url!r} (only http and https)"
    if not parts.hostname:
        return f"invalid URL {url!r}: no host"
    if _BAD_URL_CHARS.search(url):
        return f"invalid URL {url!r}: contains whitespace or control characters"
    return None


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _line_problem(fields: list[str], number: int) -> str | None:
    """What is wrong with a line's fields that ``from_line`` cannot see."""
    if len(fields) < 2 or fields[1].lower().startswith("sha256="):
        return None
    url, name = fields[0], fields[1]
    if _SCHEME.match(name):
        # URL<TAB>URL: the second URL would become a folder "http:/host/...".
        return f"line {number}: the second field {name!r} is a URL, not a name (one URL per line)"
    try:
        parts = urlsplit(url)
    except ValueError:
        return None  # from_line says what is wrong with it
    if parts.netloc and not parts.path and not parts.query and not parts.fragment:
        # "http://exa mple.com/x": a space split the URL; "http://exa" alone
        # would be a lookup of the host "exa". A root page saved under a name
        # is written "http://host/ NAME".
        return (
            f"line {number}: invalid URL {f'{url} {name}'!r}: a space inside it? "
            "(write a space as %20; for a site's root page under a name, end the URL with /)"
        )
    return None


def parse_url_list(lines: Iterable[str]) -> Iterator[DownloadRequest]:
    """Requests from the lines of a URL list (1-based line numbers).

    A line is ``URL [NAME] [sha256=HEX] [# comment]``: a field starting
    with ``#`` ends the line's fields (so a NAME cannot start with ``#``),
    and a line whose first field does is a comment. A line whose NAME is
    itself a URL, or whose URL has no path and is followed by more fields (a
    space inside the URL), is invalid: its request carries the problem.
    """
    for number, text in enumerate(lines, start=1):
        fields = _line_fields(text, number)
        if not fields:
            continue
        problem = _line_problem(fields, number)
        if problem is not None:
            yield DownloadRequest(fields[0], line=number, problem=problem)
        else:
            yield DownloadRequest._from_fields(fields, number)


def has_url_lines(lines: Iterable[str]) -> bool:
    """Whether :func:`parse_url_list` yields a request for ``lines``.

    It yields exactly one for each line with a field before its comment, so
    this stops at the first such line instead of checking every URL.
    """
    return any(_line_fields(text, number) for number, text in enumerate(lines, start=1))


def _line_fields(text: str, number: int) -> list[str]:
    """The fields of line ``number`` (1-based) before its comment."""
    if number == 1:
        text = text.removeprefix("\ufeff")  # a byte-order mark (Notepad)
    fields = text.split()
    for i, field in enumerate(fields):
        if field.startswith("#"):
            del fields[i:]
            break
    return fields


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """How one URL ended; the fields of one entry of the JSON report.

    ``path`` is relative to the destination folder (``None`` when no name
    was reached). ``sha256`` is set for ``ok`` results (unless the
    downloader runs with ``checksum=False``), ``error`` for ``failed`` ones.
    ``note`` explains a renamed collision. ``part`` is the ``NAME.part``
    file (relative to the folder) that a failed or interrupted download left
    on disk for a later run to resume; ``None`` when there is none.
    ``unchanged`` is ``True`` for a ``skipped`` file that ``update=True``
    re-checked and the server confirmed as current.
    """

    url: str
    path: str | None
    status: Status
    bytes: int
    sha256: str | None
    attempts: int
    error: str | None
    seconds: float
    line: int | None = None
    note: str | None = None
    part: str | None = None
    unchanged: bool | None = None

    @classmethod
    def unfinished(cls, request: DownloadRequest, error: str) -> DownloadResult:
        """A failed result for ``request`` that never got to run to an end."""
        return cls(
            url=request.url,
            path=request.name.as_posix() if request.name is not None else None,
            status="failed",
            bytes=0,
            sha256=None,
            attempts=0,
            error=error,
            seconds=0.0,
            line=request.line,
        )

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DownloadStarted:
    """Data is about to flow for ``url`` into ``path``."""

    url: str
    path: str
    total: int | None
    resumed_from: int


@dataclass(frozen=True, slots=True)
class DownloadProgress:
    """``nbytes`` more bytes arrived for ``url``."""

    url: str
    nbytes: int


@dataclass(frozen=True, slots=True)
class DownloadFinished:
    """``url`` ended; ``result`` says how."""

    result: DownloadResult


DownloadEvent = DownloadStarted | DownloadProgress | DownloadFinished
