"""A private X server for GUI tests: ``Xvfb -displayfd`` on a free display.

``Xvfb -displayfd FD`` picks a free display number itself and writes it to
FD once it accepts connections, so there is no guessing of numbers, no lock
file race and no sleep while waiting for it to come up.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

__all__ = ["XVFB_MISSING", "xvfb"]

XVFB_MISSING = "Xvfb is not installed (apt-get install xvfb); GUI tests need an X display"
_START_TIMEOUT = 20.0


@contextlib.contextmanager
def xvfb() -> Iterator[str]:
    """Run an Xvfb server for the block; yields its DISPLAY (``":N"``).

    Skips the calling test when Xvfb is not installed or will not start.
    """
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.skip(XVFB_MISSING)
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [binary, "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", "800x600x24"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(write_fd)
    try:
        number = b""
        deadline = time.monotonic() + _START_TIMEOUT
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            readable, _, _ = select.select([read_fd], [], [], max(left, 0))
            if not readable:
                pytest.skip(f"Xvfb did not start within {_START_TIMEOUT:.0f} s")
            piece = os.read(read_fd, 16)
            if not piece:
                pytest.skip(f"Xvfb exited at start (code {proc.wait()})")
            number += piece
        yield f":{int(number)}"
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
