"""What the test file server was asked: a bounded history and expectations.

The history keeps the last ``history`` requests (10,000 by default; ``0``
keeps none, which is what ``python -m asyncconc serve`` uses), so a server
that runs for hours, or a test that sends a million requests, does not grow
without bound. Expectations (:meth:`Recorder.expect`) are counted as the
requests arrive, so they stay exact whatever the history keeps.

The server runs on its own loop, often in another thread than the test's
(:func:`~asyncconc.testing.serve_files_in_thread`, the pytest fixtures), so
every method here takes a lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDictProxy

__all__ = ["DEFAULT_HISTORY", "Expectation", "RecordedRequest", "Recorder"]

DEFAULT_HISTORY = 10_000
_MAX_UNEXPECTED = 100  # kept for the failure message; more are only counted


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the server received.

    ``headers`` is case-insensitive and keeps repeated headers
    (``headers.getall("Accept")``); ``body`` is what the client sent (empty
    for GET); ``timestamp`` is ``time.time()`` when the headers arrived.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes = b""
    timestamp: float = 0.0


@dataclass(slots=True)
class Expectation:
    """``times`` requests (``None``: at least one) for ``path``."""

    path: str
    method: str | None = None
    query: Mapping[str, str] | None = None
    times: int | None = 1
    seen: int = 0

    def matches(self, request: RecordedRequest) -> bool:
        if request.path != self.path:
            return False
        if self.method is not None and request.method != self.method:
            return False
        return self.query is None or all(request.query.get(k) == v for k, v in self.query.items())

    @property
    def satisfied(self) -> bool:
        return self.seen >= 1 if self.times is None else self.seen == self.times

    def describe(self) -> str:
        what = f"{self.method or 'any method'} {self.path}"
        if self.query:
            what += "?" + "&".join(f"{k}={v}" for k, v in self.query.items())
        wanted = "at least once" if self.times is None else f"{self.times} time(s)"
        return f"{what}: expected {wanted}, got {self.seen}"


@dataclass(slots=True)
class Recorder:
    """The history, the expectations and the requests in flight."""

    history: int | None = DEFAULT_HISTORY
    requests: deque[RecordedRequest] = field(init=False)
    ordered: bool = False
    strict: bool = False
    in_flight: int = 0
    max_in_flight: int = 0
    _expectations: list[Expectation] = field(default_factory=list)
    _unexpected: list[str] = field(default_factory=list)
    _unexpected_count: int = 0
    _problems: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.requests = deque(maxlen=self.history)

    # -- the server's side ------------------------------------------------------

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def ended(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            if self.history != 0:
                self.requests.append(request)
            if not self._expectations and not self.strict:
                return
            match = self._match(request)
            if match is None and self.strict:
                self._unexpected_count += 1
                if len(self._unexpected) < _MAX_UNEXPECTED:
                    self._unexpected.append(f"{request.method} {request.path}")

    def _match(self, request: RecordedRequest) -> Expectation | None:
        """Count ``request`` against the expectations (the lock is held)."""
        matching = [e for e in self._expectations if e.matches(request)]
        if self.ordered:
            for expectation in self._expectations:
                if expectation.matches(request) and (
                    expectation.times is None or expectation.seen < expectation.times
                ):
                    break
                if not expectation.satisfied:
                    self._problems.append(
                        f"{request.method} {request.path} arrived out of order "
                        f"(next expected: {expectation.describe()})"
                    )
                    break
        if not matching:
            return None
        # The first one still wanting requests; else the first (then seen > times,
        # which verify() reports as too many).
        target = next((e for e in matching if e.times is None or e.seen < e.times), matching[0])
        target.seen += 1
        return target

    # -- the test's side ----------------------------------------------------------

    def expect(
        self,
        path: str,
        *,
        method: str | None = None,
        query: Mapping[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        if times is not None and times < 0:
            raise ValueError(f"times={times!r}: must be 0 or more (None: at least once)")
        with self._lock:
            self._expectations.append(
                Expectation("/" + path.lstrip("/"), method and method.upper(), query, times)
            )

    def failures(self) -> list[str]:
        with self._lock:
            found = [e.describe() for e in self._expectations if not e.satisfied]
            found += self._problems
            if self._unexpected_count:
                shown = ", ".join(self._unexpected)
                found.append(f"{self._unexpected_count} unexpected request(s): {shown}")
            return found

    def verify(self) -> None:
        """Raise ``AssertionError`` listing every unmet expectation."""
        found = self.failures()
        if found:
            raise AssertionError("the file server's expectations failed:\n  " + "\n  ".join(found))
