"""Responsive GUI: the lesson's Download/About window, download as a coroutine.

In the lesson, a download run in the button's callback freezes the window
for its whole duration; moving it to a thread fixes that. Here it is a
coroutine on an asyncio loop married to tk's own loop (see
``asyncconc.gui``): the window stays responsive, About answers at once and
the download keeps going while the About box is open.

Needs a display (an X server; ``xvfb-run python scenarios/gui.py`` works
headless). Without one it says so and exits with code 2.

Run: ``python scenarios/gui.py [--files N] [--auto]``
``--auto`` presses Download itself, measures how late tk's timers ran during
the download, and closes the window at the end (for smoke tests and demos).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence

from asyncconc.lessons import Timing, format_rows
from asyncconc.lessons.downloads import background_server

__all__ = ["main", "measure"]


EXIT_NO_DISPLAY = 2


def no_display_reason() -> str | None:
    """Why no window can be opened here, or None if one can."""
    try:
        import tkinter
    except ImportError:
        return "this Python has no tkinter (install python3-tk)"
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        return "DISPLAY is not set (try: xvfb-run python scenarios/gui.py)"
    try:
        tkinter.Tk().destroy()
    except tkinter.TclError as exc:
        return str(exc)
    return None


def measure(files: int = 4, *, size: int = 256 * 1024, drip: float = 0.02) -> list[Timing]:
    """Open the window, press Download, time it and tk's worst timer delay.

    Raises :class:`tkinter.TclError` without a display.
    """
    from asyncconc.gui import DownloadWindow

    names = {f"file{i}.bin": size for i in range(files)}
    with background_server(names) as server, tempfile.TemporaryDirectory() as tmp:
        # The server sends each file in 8 KiB pieces, ``drip`` seconds apart,
        # so the download takes a while and reports progress all along.
        urls = [server.url(name, drip=drip, drip_size=8192) for name in names]
        window = DownloadWindow(urls, tmp, concurrency=2, announce=False)
        root = window.root
        lateness: list[float] = []

        def tick(expected: float) -> None:
            lateness.append(time.monotonic() - expected)
            if window.task is not None and not window.task.done():
                root.after(50, tick, time.monotonic() + 0.05)

        try:
            start = time.perf_counter()
            window.download_button.invoke()
            tick(time.monotonic())
            assert window.task is not None
            results = window.bridge.run_until_complete(window.task)
            seconds = time.perf_counter() - start
            ok = sum(1 for r in results if r.ok)
            root.after(300, root.quit)  # idle for a moment: what does it cost?
            root.mainloop()
            idle_start = time.process_time()
            root.after(1000, root.quit)
            root.mainloop()
            idle_cpu = time.process_time() - idle_start
        finally:
            window.close()
            window.bridge.close()
    return [
        Timing("download in the window", seconds, f"{ok}/{files} files, button enabled again"),
        Timing(
            "worst tk timer delay", max(lateness, default=0.0), "while downloading (50 ms ticks)"
        ),
        Timing("CPU used in 1 s idle", idle_cpu, "no polling timer: near zero"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4, help="files to download (default 4)")
    parser.add_argument(
        "--auto", action="store_true", help="press Download, report, close the window"
    )
    args = parser.parse_args(argv)
    if args.files < 1:
        parser.error("--files must be at least 1")
    reason = no_display_reason()
    if reason is not None:
        print(f"scenarios/gui.py needs a display: {reason}", file=sys.stderr)
        return EXIT_NO_DISPLAY
    if args.auto:
        rows = measure(args.files)
        print("\n".join(format_rows(rows)))
        return 0

    from asyncconc.gui import run_download_window

    size = 1 << 20
    names = {f"file{i}.bin": size for i in range(args.files)}
    with background_server(names) as server, tempfile.TemporaryDirectory() as tmp:
        urls = [server.url(name, drip=0.02, drip_size=16384) for name in names]
        print("Press Download, then About while it runs; close the window to quit.")
        results = run_download_window(urls, tmp, concurrency=2)
    if results is not None:
        print(f"downloaded {sum(1 for r in results if r.ok)} of {len(results)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
