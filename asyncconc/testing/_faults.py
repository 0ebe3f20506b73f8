"""Fault parameters of the test file server: one parser for both ends.

:meth:`FileServer.url` checks its keyword arguments with :func:`parse_faults`
when the test builds the URL (a typo is a ``ValueError`` in the test, not a
clean 200 that lets it pass for the wrong reason), and the request handler
parses the query string with the same function (a bad value on the wire is
a ``400`` whose body gives the reason, never a 500 with a traceback that a
retrying client would take for a transient failure).

Flags are off when false: ``norange=False`` and ``gzip=0`` ask for nothing.
Numbers have bounds, so no URL can hold a connection open for ever
(``delay``, ``drip``; a ``stall`` ends after :data:`MAX_DELAY`) or make
the server send a status that is not a final HTTP status (``status=99``,
``status=101``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_DELAY",
    "REDIRECT_STATUSES",
    "Faults",
    "check_names",
    "parse_faults",
    "query_value",
]

MAX_DELAY = 300.0  # seconds: ``delay``, ``drip`` and a ``stall`` stay below this
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 100
_MAX_RETRY_AFTER = 86_400.0
_MAX_DRIP_SIZE = 1 << 20

_FLAGS: tuple[str, ...] = ("norange", "badrange", "gzip", "chunked", "novalidator", "loop")
_INTS: tuple[str, ...] = ("status", "fail", "fail_status", "truncate", "stall", "times", "redirect")
_INTS += ("redirect_status", "drip_size")
_FLOATS = ("delay", "drip", "retry_after")
_STRINGS = ("cd", "location")
KNOWN = frozenset(_FLAGS + _INTS + _FLOATS + _STRINGS)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True, slots=True)
class Faults:
    """What one request asked for; ``None``/``False`` mean "not asked"."""

    status: int | None = None
    fail: int = 0
    fail_status: int = 503
    retry_after: float | None = None
    delay: float | None = None
    truncate: int | None = None
    stall: int | None = None
    times: int | None = None
    drip: float = 0.0
    drip_size: int = 1024
    norange: bool = False
    badrange: bool = False
    cd: str | None = None
    redirect: int = 0
    redirect_status: int = 302
    location: str | None = None
    loop: bool = False
    gzip: bool = False
    chunked: bool = False
    novalidator: bool = False

    @property
    def counted(self) -> bool:
        """Whether the answer depends on how many requests came before."""
        return bool(self.fail or self.times is not None)


def query_value(value: object) -> str | None:
    """How a ``url()`` keyword goes into the query; ``None`` drops it (off)."""
    if value is None or value is False:
        return None
    if value is True:
        return "1"
    return str(value)


def _flag(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name}={text!r}: expected 1/0 or true/false")


def _int(name: str, text: str, low: int, high: int | None = None) -> int:
    stripped = text.strip()
    # int() would take "1_0", "+5" and " 7": a URL parameter is plain digits.
    if not stripped.isascii() or not stripped.isdigit():
        raise ValueError(f"{name}={text!r}: expected a whole number")
    value = int(stripped)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name}={text!r}: must be {bound}")
    return value


def _float(name: str, text: str, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a number of seconds") from None
    if not math.isfinite(value) or value < 0 or value > high:
        raise ValueError(f"{name}={text!r}: must be between 0 and {high:g} seconds")
    return value


def _location(text: str) -> str:
    # Any scheme on purpose: tests check that clients refuse ``javascript:``
    # or ``file:`` targets. On ``python -m asyncconc serve`` faults are off
    # unless asked for (--faults), so this is not an open redirect there.
    if not text or any(c in text for c in "\r\n\x00"):
        raise ValueError(f"location={text!r}: must be a non-empty URL without CR, LF or NUL")
    return text


def check_names(names: Iterable[str]) -> None:
    """Raise ``ValueError`` for a name that is not a fault parameter."""
    for name in names:
        if name not in KNOWN:
            known = ", ".join(sorted(KNOWN))
            raise ValueError(
                f"unknown fault parameter {name!r}{_hint(name)} (known: {known}; "
                "pass other query parameters as query={...})"
            )


def _hint(name: str) -> str:
    close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_faults(query: Mapping[str, str]) -> Faults:
    """Check every fault parameter; raise ``ValueError`` naming the first bad one.

    Other names are ordinary query parameters (a site's ``?id=7``) and are
    ignored, except one that is a near miss of a fault name (``truncat``):
    that is taken for a typo and refused, so it cannot pass as a clean 200.
    """
    values: dict[str, object] = {}
    for name, text in query.items():
        if name not in KNOWN:
            if _hint(name):
                raise ValueError(f"unknown fault parameter {name!r}{_hint(name)}")
            continue
        if name in _FLAGS:
            values[name] = _flag(name, text)
        elif name in ("status", "fail_status"):
            values[name] = _int(name, text, 200 if name == "status" else 400, 599)
        elif name == "redirect_status":
            code = _int(name, text, 300, 399)
            if code not in REDIRECT_STATUSES:
                raise ValueError(f"redirect_status={text!r}: must be 301, 302, 303, 307 or 308")
            values[name] = code
        elif name == "redirect":
            values[name] = _int(name, text, 0, _MAX_REDIRECTS)
        elif name == "times":
            values[name] = _int(name, text, 1)
        elif name == "drip_size":
            values[name] = _int(name, text, 1, _MAX_DRIP_SIZE)
        elif name in _INTS:
            values[name] = _int(name, text, 0)
        elif name == "retry_after":  # only a header: no wait on the server
            values[name] = _float(name, text, _MAX_RETRY_AFTER)
        elif name in _FLOATS:
            values[name] = _float(name, text, MAX_DELAY)
        elif name == "location":
            values[name] = _location(text)
        else:
            values[name] = text
    faults = Faults(**values)  # type: ignore[arg-type]
    if faults.stall is not None and faults.truncate is not None:
        raise ValueError("stall and truncate cannot be combined: the body either stops or ends")
    return faults
