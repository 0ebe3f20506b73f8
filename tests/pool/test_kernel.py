"""The lesson's kernel and the range splitting it runs on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncconc import partial_sum, split_range


@given(st.integers(-1000, 1000), st.integers(0, 2000))
def test_partial_sum_matches_the_closed_form(start: int, length: int) -> None:
    stop = start + length
    assert partial_sum(start, stop) == sum(range(start, stop))


@given(st.integers(0, 10_000), st.integers(1, 50))
def test_split_range_covers_the_range_exactly(n: int, parts: int) -> None:
    ranges = split_range(1, n + 1, parts)
    assert len(ranges) == min(parts, n)
    flat = [i for low, high in ranges for i in range(low, high)]
    assert flat == list(range(1, n + 1))
    lengths = [high - low for low, high in ranges]
    assert not lengths or max(lengths) - min(lengths) <= 1
    assert sum(partial_sum(low, high) for low, high in ranges) == n * (n + 1) // 2


def test_split_range_refuses_zero_parts() -> None:
    with pytest.raises(ValueError, match="parts"):
        split_range(0, 10, 0)
