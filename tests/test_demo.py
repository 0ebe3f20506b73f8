"""``python -m asyncconc demo``: the README's first command works offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_downloads_and_verifies_everything(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asyncconc", "demo", "-q", "-o", str(tmp_path / "files")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "96 ok, 0 skipped, 0 failed" in out.stdout
    assert "every file verified" in out.stdout
    files = sorted(p.name for p in (tmp_path / "files").iterdir())
    assert len(files) == 96
    assert "report-from-server.bin" in files
    assert not [f for f in files if f.endswith((".part", ".meta"))]
