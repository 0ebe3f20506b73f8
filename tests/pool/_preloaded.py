"""Imported through ``LoopPool(preload=...)``: remembers which process imported it."""

from __future__ import annotations

import os

IMPORTED_BY = os.getpid()
