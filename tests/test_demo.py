"""``python -m asyncconc demo``: the README's first command works offline."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path


def test_demo_downloads_and_verifies_everything(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncconc",
            "demo",
            "-q",
            "--no-lessons",
            "-o",
            str(tmp_path / "files"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "96 ok, 0 skipped, 0 failed" in out.stdout
    assert "every file verified" in out.stdout
    # The downloader's index of saved files (.asyncconc-index.jsonl) is not a download.
    files = sorted(p.name for p in (tmp_path / "files").iterdir() if not p.name.startswith("."))
    assert len(files) == 96
    assert "report-from-server.bin" in files
    assert not [f for f in files if f.endswith((".part", ".meta"))]


def test_demo_prints_every_lesson_in_one_table(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asyncconc", "demo", "-q", "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for heading in ("downloads", "account", "ping/pong", "GIL", "divide and conquer"):
        assert f"\n{heading} (" in text, heading
    for row in ("coroutines", "coroutines + asyncio.Lock", "LoopPool, 8 ranges, start included"):
        assert f"  {row} " in text, row
    assert "balance 20 (right)" in text
    if importlib.util.find_spec("distributed") is not None:  # the dask extra
        assert "\ndistributed processes (" in text
        assert "  DaskPool on a LocalCluster of 2, start included " in text
    assert "WRONG" in text  # the lesson's broken versions are shown broken
    assert list(tmp_path.iterdir()) == []  # the temporary download folder is gone
