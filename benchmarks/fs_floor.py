"""What creating small files costs on this machine, with no network at all.

Usage (from the repository root)::

    python benchmarks/fs_floor.py                      # 2,000 x 16 KiB in benchmarks/_work/fs
    python benchmarks/fs_floor.py --dir /dev/shm/fs    # the same on tmpfs
    python benchmarks/fs_floor.py --threads 1,2,4
    python benchmarks/fs_floor.py -n 20000 --threads 1 --modes part,direct

Each run creates N files the way every downloader must at least (``open``
with ``O_CREAT | O_EXCL``, one ``write``, ``close``, ``rename`` from
``NAME.part``) in a fresh folder after ``os.sync()``, in one thread or
spread over a thread pool, and prints the wall time, files/s and the
process's user and system CPU. The files of every run stay until the
last run is done: on an ext4 without a journal, creating files just after
thousands were deleted is several times slower (the allocator skips
recently freed inodes one by one; ``skips_recent_inodes`` in
``benchmarks/download.py``), which would be measured instead. This is the
floor under the small-file sets of ``benchmarks/download.py``: no client
can save files faster than this. ``--modes part,direct`` also runs the way
curl and wget2 save a file, straight to ``NAME`` (no ``.part``, no rename:
a crash leaves a short file under the final name), to show what the rename
that the never-corrupt guarantee needs costs here.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def create(folder: str, index: int, data: bytes, direct: bool = False) -> None:
    final = os.path.join(folder, f"f{index:06d}.bin")
    fd = os.open(final if direct else final + ".part", FLAGS, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    if not direct:
        os.rename(final + ".part", final)


def run(folder: Path, count: int, size: int, threads: int, mode: str = "part") -> str:
    folder.mkdir(parents=True)
    os.sync()
    data = os.urandom(size)
    where = str(folder)
    direct = mode == "direct"
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if threads <= 1:
        for index in range(count):
            create(where, index, data, direct)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: create(where, i, data, direct), range(count), chunksize=16))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    return (
        f"{count} x {size // 1024} KiB, {mode:<6}, {threads} thread(s): {wall:6.2f} s wall, "
        f"{count / wall:7.0f} files/s, user {user:.2f} s, sys {system:.2f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=REPO / "benchmarks" / "_work" / "fs")
    parser.add_argument("-n", "--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=16 * 1024)
    parser.add_argument("--threads", default="1,2,4", help="comma list of thread counts")
    parser.add_argument(
        "--modes", default="part", help="comma list: part (NAME.part, rename), direct (NAME)"
    )
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if not set(modes) <= {"part", "direct"}:
        parser.error(f"--modes: part or direct, not {args.modes!r}")
    print(f"folder: {args.dir}; load average: {os.getloadavg()}")
    shutil.rmtree(args.dir, ignore_errors=True)  # an earlier invocation's (may still be 'recent')
    try:
        runs = [(int(t), mode) for t in args.threads.split(",") for mode in modes]
        for number, (threads, mode) in enumerate(runs):
            print(run(args.dir / f"run-{number}", args.count, args.size, threads, mode))
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
