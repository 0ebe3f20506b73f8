"""The rows every lesson measures, and how they are printed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Timing", "format_rows", "with_speedups"]


@dataclass(frozen=True, slots=True)
class Timing:
    """One line of a comparison table: a way of doing it, its time, a verdict."""

    label: str
    seconds: float
    note: str = ""


def with_speedups(rows: Sequence[Timing]) -> list[Timing]:
    """The rows with "speedup N.NNx" over the first row added to their notes."""
    base = rows[0].seconds if rows else 0.0
    out = []
    for row in rows:
        speedup = f"speedup {base / row.seconds:.2f}x" if row.seconds > 0 else ""
        note = f"{row.note}; {speedup}" if row.note else speedup
        out.append(Timing(row.label, row.seconds, note))
    return out


def format_rows(rows: Sequence[Timing], indent: str = "  ") -> list[str]:
    """Aligned ``label  seconds  note`` lines."""
    if not rows:
        return []
    width = max(len(r.label) for r in rows)
    return [f"{indent}{r.label:<{width}}  {r.seconds:7.3f} s  {r.note}".rstrip() for r in rows]
