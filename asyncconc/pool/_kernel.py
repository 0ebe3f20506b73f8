"""The lesson's CPU-bound kernel: add the numbers of a range with a Python loop.

Deliberately an explicit loop (not ``sum(range(...))`` or the closed form):
it is the work the classic lesson hands to its eight processes, and it keeps
the interpreter busy, so it shows what the GIL does to threads and what
separate processes give back. Ranges are never materialised as lists.
"""

from __future__ import annotations

__all__ = ["partial_sum", "split_range"]


def partial_sum(start: int, stop: int) -> int:
    """``start + (start + 1) + ... + (stop - 1)``, one addition at a time."""
    total = 0
    for number in range(start, stop):
        total += number
    return total


def split_range(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into ``parts`` contiguous ranges of near-equal length.

    Empty ranges are left out, so fewer than ``parts`` come back when the
    range is shorter than ``parts``. Raises :class:`ValueError` if
    ``parts < 1``.
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, not {parts}")
    length = max(0, stop - start)
    base, extra = divmod(length, parts)
    ranges: list[tuple[int, int]] = []
    low = start
    for index in range(parts):
        high = low + base + (1 if index < extra else 0)
        if high > low:
            ranges.append((low, high))
        low = high
    return ranges
