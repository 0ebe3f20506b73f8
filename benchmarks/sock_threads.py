"""The "sock-threads" client: the per-byte floor of Python on every core, for comparison only.

``python benchmarks/sock_threads.py URLS DIR -j N`` (URLS: ``URL NAME`` lines,
plain ``http://``) downloads every URL in a pool of N threads, one blocking
socket per file: the head is read, then the body is received into one
preallocated buffer per thread with ``socket.recv_into`` and written from it
with ``os.write`` to ``NAME.part``, renamed to ``NAME`` when the length
matches. No event loop, no parser beyond the status line and
``Content-Length``, no retries, names, checksums or progress; every system
call releases the GIL, so the threads' receives and writes overlap on all
cores, as wget2's do.

Not part of asyncconc: the issue-8 benchmark runs it on the big sets to
measure how close any Python client gets to wget2 there (the "all cores"
target), apart from what asyncconc's event loop and guarantees add. Exit 1 if
any download failed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

BUFFER = 256 * 1024
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def _head(sock: socket.socket, buffer: memoryview) -> tuple[int, bytes]:
    """Read the answer's head; its ``Content-Length`` and the body bytes read with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        n = sock.recv_into(buffer)
        if n == 0:
            raise ConnectionError("connection closed in the head")
        data += bytes(buffer[:n])
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *fields = head.split(b"\r\n")
    if status.split(b" ", 2)[1] != b"200":
        raise ConnectionError(f"status {status.decode(errors='replace')!r}")
    for line in fields:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value), rest
    raise ConnectionError("no Content-Length")


def fetch(url: str, dest: Path) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"{url}: only plain http:// URLs")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    buffer = memoryview(bytearray(BUFFER))
    part = dest.with_name(dest.name + ".part")
    with socket.create_connection((parts.hostname, parts.port or 80)) as sock:
        request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("ascii"))
        length, first = _head(sock, buffer)
        fd = os.open(part, FLAGS, 0o644)
        try:
            os.write(fd, first)
            left = length - len(first)
            while left > 0:
                n = sock.recv_into(buffer, min(left, BUFFER))
                if n == 0:
                    raise ConnectionError(f"{url}: body ended {left} bytes early")
                os.write(fd, buffer[:n])
                left -= n
        finally:
            os.close(fd)
    os.replace(part, dest)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("-j", "--jobs", type=int, default=16)
    args = parser.parse_args(argv)
    pairs = [line.split()[:2] for line in args.urls.read_text().splitlines() if line.strip()]
    failed = 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(fetch, url, args.dest / name) for url, name in pairs]
        for future in futures:
            try:
                future.result()
            except (OSError, ValueError) as exc:
                print(f"sock-threads: {exc}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
