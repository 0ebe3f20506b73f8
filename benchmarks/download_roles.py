"""CPU and memory of ``asyncconc download`` per process role: parent, fork server, workers.

``download.py`` reports a run's total; this splits it, which is what says
whether ``--workers``' parent does "almost nothing per file" (issue 8)::

    python benchmarks/download_roles.py --files 20000 --repeat 2 \\
        --variant new-w2 --variant base-w2=/tmp/v/base --variant one

A variant is ``LABEL[=DIR]``: ``DIR/asyncconc`` (a copy of the package, on
``PYTHONPATH``, run from ``DIR``) or the installed one; a label ending in
``w2`` adds ``--workers 2``. The files (16 KiB each) are served by nginx from
the ``download.py`` work folder; each run gets a fresh output folder after a
``sync`` (``--out`` puts it elsewhere, e.g. on tmpfs; on an ext4 without a
journal every run's files are kept until the last run, as ``download.py``
keeps them). CPU is user+sys of each process as last sampled (every 50 ms, so a
process that exits between samples loses up to 50 ms); PSS per process is
its peak, "sum" the peak of the sum over the tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # types-psutil is optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import download  # the sibling benchmark: data sets, nginx


def _role(proc: psutil.Process, root: int) -> str:
    if proc.pid == root:
        return "parent"
    if "_forkserver" in " ".join(proc.cmdline()):
        return "forkserver" if proc.ppid() == root else "worker"
    return "other"


def _command(variant: str, urls: Path, out: Path) -> tuple[list[str], str | None]:
    label, _, source = variant.partition("=")
    extra = ["--workers", "2"] if label.endswith("w2") else []
    cmd = [sys.executable, "-m", "asyncconc", "download", str(urls), "-o", str(out), "-q"]
    return [*cmd, *extra], (str(Path(source).resolve()) if source else None)


def run_once(variant: str, urls: Path, out: Path, trash: Path | None) -> str:
    """One run into a fresh ``out``; with ``trash``, its output is moved there after."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    cmd, source = _command(variant, urls, out)
    env = dict(os.environ, PYTHONPATH=source) if source else None
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=source, env=env, stdout=subprocess.DEVNULL)
    cpu: dict[int, tuple[str, float]] = {}
    peak: dict[int, tuple[str, int]] = {}
    peak_sum = 0
    while proc.poll() is None:
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        total = 0
        for each in tree:
            try:
                role = _role(each, proc.pid)
                times = each.cpu_times()
                pss = int(each.memory_full_info().pss)
            except psutil.Error:
                continue
            cpu[each.pid] = (role, times.user + times.system)
            peak[each.pid] = (role, max(pss, peak.get(each.pid, (role, 0))[1]))
            total += pss
        peak_sum = max(peak_sum, total)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    by_role: dict[str, float] = {}
    for role, seconds in cpu.values():
        by_role[role] = by_role.get(role, 0.0) + seconds
    saved = sum(1 for _ in out.glob("*.bin"))
    if trash is not None:
        download.set_aside(out, trash)  # deleted after all runs (see main)
    else:
        shutil.rmtree(out, ignore_errors=True)
    mib = 1 << 20
    return (
        f"{variant:<18} wall {wall:6.2f} s, {saved} files; CPU s "
        + " ".join(f"{r} {s:.2f}" for r, s in sorted(by_role.items()))
        + f"; PSS MiB sum {peak_sum / mib:.1f}: "
        + " ".join(f"{r} {p / mib:.1f}" for r, p in sorted(peak.values()))
        + f"; load {os.getloadavg()[0]:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL[=DIR]")
    parser.add_argument("--workdir", type=Path, default=download.REPO / "benchmarks" / "_work")
    parser.add_argument("--out", type=Path, help="output folder (default WORKDIR/roles-out)")
    args = parser.parse_args()
    work: Path = args.workdir.resolve()
    out: Path = (args.out or work / "roles-out").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # On an ext4 without a journal, deleting a run's files right before the
    # next run made its creates skip the freed inodes one by one (16-19 s
    # instead of 4.7 s for 20,000 files, measured): keep them until the end.
    trash = None
    if download.skips_recent_inodes(out.parent):
        trash = download.trash_of(out.parent)
        download.empty_trash(trash)
        download.wait_out_deletions(trash)
    spec = download.SetSpec(f"roles{args.files}", args.files, 16 * download.KIB)
    files = download.prepare_set(spec, work / "data")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    print(f"{spec.describe()}; {download.load_line()}", flush=True)
    with download.run_nginx(nginx, work / "data" / spec.name, work / "roles-server", 1) as server:
        urls = work / "roles-urls.txt"
        urls.write_text("".join(f"{server.base_url}/{f.name} {f.name}\n" for f in files))
        try:
            for _ in range(args.repeat):
                for variant in args.variant or ["one", "w2"]:
                    print(run_once(variant, urls, out, trash), flush=True)
        finally:
            if trash is not None:
                download.empty_trash(trash)
    return 0


if __name__ == "__main__":
    sys.exit(main())
