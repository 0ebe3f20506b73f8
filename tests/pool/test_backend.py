"""ChunkPolicy, ChunkSizer, map_window: how both pools batch map calls and bound work in flight."""

from __future__ import annotations

import pytest

from asyncconc.pool._backend import ChunkPolicy, ChunkSizer, map_window


def _sizer(**changes: object) -> ChunkSizer:
    options: dict[str, object] = {
        "fixed": None,
        "is_async": False,
        "length": 0,
        "workers": 2,
        "target": 0.05,
        "max_chunk": 65536,
    }
    options.update(changes)
    return ChunkSizer(**options)  # type: ignore[arg-type]


def test_plain_chunks_grow_at_most_16_fold_towards_the_target() -> None:
    sizer = _sizer()
    assert sizer.size == 1
    sizer.observe(1, 1e-6)  # 50,000 calls would take 50 ms
    assert sizer.size == 16
    sizer.observe(16, 16e-6)
    assert sizer.size == 256
    sizer.observe(250, 0.1)  # 0.4 ms a call: 125 calls make 50 ms
    assert sizer.size == 125


def test_a_known_length_caps_chunks_at_a_quarter_of_each_workers_share() -> None:
    sizer = _sizer(length=800)  # 2 workers: 400 each, a quarter is 100
    for _ in range(4):
        sizer.observe(sizer.size, 1e-9)
    assert sizer.size == 100


def test_fixed_coroutine_and_empty_or_instant_chunks_keep_the_size() -> None:
    fixed = _sizer(fixed=7)
    fixed.observe(7, 1e-6)
    assert fixed.size == 7
    coroutines = _sizer(is_async=True, start=8)
    coroutines.observe(8, 1e-6)
    assert coroutines.size == 8
    plain = _sizer()
    plain.observe(0, 0.01)  # a chunk cancelled before it ran
    plain.observe(1, 0.0)  # nothing measured
    assert plain.size == 1


def test_the_window_fills_every_workers_concurrency_twice_for_coroutines() -> None:
    assert map_window(2, 16, 1, is_async=False) == 6
    assert map_window(2, 16, 8, is_async=True) == 8  # 64 calls for 32 slots
    assert map_window(2, 16, 64, is_async=True) == 4  # never below 2 per worker


def test_a_policy_checks_chunksize_and_sizes_coroutine_chunks_by_concurrency() -> None:
    dask_like = ChunkPolicy(target=0.05, max_chunk=65536, coroutine_share=0.5)
    with pytest.raises(ValueError, match="chunksize must be at least 1, not 0"):
        dask_like.sizer(range(10), 0, False, 2, 16)
    assert dask_like.sizer(range(10), None, True, 2, 16).size == 8
    assert dask_like.sizer(range(10), None, True, 2, 1).size == 1
    assert dask_like.sizer(range(10), None, False, 2, 16).size == 1
    assert ChunkPolicy(target=0.005, max_chunk=4096).sizer([], None, True, 2, 16).size == 1
