"""Deterministic file contents for tests and benchmarks.

Generated content is a pseudo-random block (seeded) repeated: any byte
range can be produced on the fly without holding the file in memory, so a
1 GiB file costs the server 1 MiB.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

__all__ = ["BLOCK_SIZE", "pattern_bytes", "pattern_chunks", "pattern_sha256"]

BLOCK_SIZE = 1 << 20


def _block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK_SIZE)


def pattern_chunks(
    size: int, seed: int = 0, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """Bytes ``start``..``end`` (exclusive) of the generated file ``(size, seed)``."""
    block = _block(seed)
    stop = size if end is None else min(end, size)
    pos = start
    while pos < stop:
        offset = pos % BLOCK_SIZE
        piece = block[offset : offset + min(BLOCK_SIZE - offset, stop - pos)]
        yield piece
        pos += len(piece)


def pattern_bytes(size: int, seed: int = 0) -> bytes:
    """The whole generated file ``(size, seed)`` in memory."""
    return b"".join(pattern_chunks(size, seed))


def pattern_sha256(size: int, seed: int = 0) -> str:
    """The sha256 hex digest of the generated file ``(size, seed)``."""
    digest = hashlib.sha256()
    for chunk in pattern_chunks(size, seed):
        digest.update(chunk)
    return digest.hexdigest()
