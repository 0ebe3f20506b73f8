"""The tk <-> asyncio bridge and the lesson's window, on a real Tk under Xvfb.

Each test arms a tk watchdog timer: tk timers fire even inside a modal
dialog's nested loop, so a stuck test closes its dialogs, destroys its
window and fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import subprocess
import threading
import time
import tkinter
import tkinter.messagebox
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncconc import DownloadEvent, DownloadProgress, DownloadStarted
from asyncconc.gui import DownloadWindow, TkBridge
from asyncconc.testing import FileServer
from tests.gui_support import xvfb

pytestmark = pytest.mark.gui

BOX = ".__tk__messagebox"  # where tk_messageBox puts its dialog (parent ".")
WATCHDOG_MS = 30_000


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with xvfb() as name:
        yield name


@pytest.fixture
def root(display: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tkinter.Tk]:
    """A Tk root on the test display, destroyed (and freed) in this thread.

    A Tcl interpreter must be freed by the thread that made it: freeing it
    elsewhere aborts the process ("Tcl_AsyncDelete: async handler deleted
    by the wrong thread"). A test's windows sit in reference cycles (a
    window and its task, closures) that the cyclic GC frees in whichever
    thread happens to trigger it, such as the file server's. So automatic GC
    is off during the test and the cycles are collected here, while this
    fixture still holds the root: the interpreter is then freed when pytest
    drops the root, in the main thread.
    """
    monkeypatch.setenv("DISPLAY", display)
    gc.disable()
    tk = tkinter.Tk()
    failures: list[str] = []
    tk.after(WATCHDOG_MS, watchdog, tk, failures)
    try:
        yield tk
    finally:
        if _alive(tk):
            tk.destroy()
        gc.collect()
        gc.enable()
    assert failures == []


def _alive(tk: tkinter.Tk) -> bool:
    try:
        return bool(tk.winfo_exists())
    except tkinter.TclError:  # "application has been destroyed"
        return False


def watchdog(tk: tkinter.Tk, failures: list[str]) -> None:
    # Closing the box ends a nested loop; destroying the window ends
    # mainloop() and makes run_until_complete() raise instead of waiting on.
    failures.append(f"watchdog: the test was still running after {WATCHDOG_MS} ms")
    close_box(tk)
    tk.destroy()


def box_is_open(tk: tkinter.Misc) -> bool:
    return bool(int(tk.tk.call("winfo", "exists", BOX)))


def close_box(tk: tkinter.Misc, button: str = "ok") -> None:
    """Press ``button`` in the open message box, as a user would."""
    if box_is_open(tk):
        tk.tk.call(f"{BOX}.{button}", "invoke")


def slow_files(server: FileServer, count: int, size: int = 64 * 1024) -> list[str]:
    # drip: 4 KiB every 30 ms, so each file takes ~0.5 s and reports
    # progress all along.
    for i in range(count):
        server.add_generated(f"file{i}.bin", size)
    return [server.url(f"file{i}.bin", drip=0.03, drip_size=4096) for i in range(count)]


def test_download_keeps_progressing_while_about_is_open(
    root: tkinter.Tk, threaded_server: FileServer, tmp_path: Path
) -> None:
    urls = slow_files(threaded_server, 6)
    in_box = {"open": False, "progress": 0, "bytes_at_open": 0}
    lateness: list[float] = []

    def on_event(event: DownloadEvent) -> None:
        # Runs on the asyncio loop. Counting here proves asyncio runs while
        # the box's nested tk loop is in charge.
        if in_box["open"] and isinstance(event, DownloadProgress):
            in_box["progress"] += 1
            if in_box["progress"] >= 5 and len(lateness) >= 5:
                close_box(root)

    window = DownloadWindow(
        urls, tmp_path / "out", concurrency=2, announce=False, on_event=on_event, root=root
    )
    try:
        window.download_button.invoke()
        assert str(window.download_button["state"]) == tkinter.DISABLED

        def tick(expected: float) -> None:
            lateness.append(time.monotonic() - expected)
            if box_is_open(root):
                root.after(20, tick, time.monotonic() + 0.02)

        def opened() -> None:  # first callback inside About's nested loop
            assert box_is_open(root)
            in_box.update(open=True, bytes_at_open=window.bytes_done)
            tick(time.monotonic())

        root.after(0, opened)
        window.about_button.invoke()  # returns when the box is closed
        in_box["open"] = False
        assert in_box["progress"] >= 5, "the download stalled while About was open"
        assert window.bytes_done > in_box["bytes_at_open"]
        assert max(lateness) < 0.25, f"tk timers ran late: {max(lateness):.3f} s"

        results = window.bridge.run_until_complete(window.task)  # type: ignore[arg-type]
        assert [r.status for r in results] == ["ok"] * 6
        assert str(window.download_button["state"]) == tkinter.NORMAL
        assert window.files_done == 6
        assert window.bytes_done == 6 * 64 * 1024
        saved = (tmp_path / "out").iterdir()
        assert sorted(p.name for p in saved if not p.name.startswith(".")) == [
            f"file{i}.bin" for i in range(6)
        ]
        assert "Done: 6 of 6 files" in window.status.get()
    finally:
        window.bridge.close()


def test_download_complete_box_comes_at_the_end_and_then_the_button(
    root: tkinter.Tk, threaded_server: FileServer, tmp_path: Path
) -> None:
    threaded_server.add_bytes("a.txt", b"a" * 1000)
    threaded_server.add_bytes("b.txt", b"b" * 2000)
    urls = [threaded_server.url("a.txt"), threaded_server.url("b.txt")]
    window = DownloadWindow(urls, tmp_path / "out", announce=True, root=root)
    shown: list[tuple[str, str, bool]] = []

    def on_map(event: tkinter.Event[tkinter.Misc]) -> None:
        # The lesson's "Download complete!" box has just appeared.
        if str(event.widget) == BOX and not shown:
            message = str(root.tk.call(f"{BOX}.msg", "cget", "-text"))
            button_enabled = str(window.download_button["state"]) == tkinter.NORMAL
            shown.append((root.tk.call("wm", "title", BOX), message, button_enabled))
            root.after_idle(close_box, root)

    root.bind_class("Dialog", "<Map>", on_map, add="+")  # tk_messageBox's toplevel class
    try:
        window.download_button.invoke()
        results = window.bridge.run_until_complete(window.task)  # type: ignore[arg-type]
    finally:
        window.bridge.close()
    assert [r.status for r in results] == ["ok", "ok"]
    assert shown == [("Prompt", "Download complete!", False)]
    assert str(window.download_button["state"]) == tkinter.NORMAL


def test_idle_window_uses_almost_no_cpu(root: tkinter.Tk, tmp_path: Path) -> None:
    window = DownloadWindow([], tmp_path, announce=False, root=root)
    try:
        # Let the window map and draw, then measure a second of doing nothing.
        root.after(300, root.quit)
        root.mainloop()
        start = time.process_time()
        root.after(1000, root.quit)
        root.mainloop()
        used = time.process_time() - start
        assert used < 0.1, f"an idle window used {used:.3f} s of CPU in 1 s"
    finally:
        window.bridge.close()


def test_asyncio_timers_and_threadsafe_calls_wake_the_loop_promptly(root: tkinter.Tk) -> None:
    bridge = TkBridge(root)

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(0.2)
        sleep_late = loop.time() - start - 0.2

        # Another thread wakes the loop through its self-pipe, which the
        # selector's fd (watched by tk) reports: no timer is involved.
        arrived: asyncio.Future[float] = loop.create_future()
        go = threading.Event()

        def other_thread() -> None:
            go.wait(10)
            sent = time.monotonic()
            loop.call_soon_threadsafe(arrived.set_result, sent)

        thread = threading.Thread(target=other_thread)
        thread.start()
        go.set()
        sent = await arrived
        thread.join()
        return sleep_late, time.monotonic() - sent

    try:
        sleep_late, wake_latency = bridge.run_until_complete(bridge.spawn(main()))
    finally:
        bridge.close()
    assert -0.005 < sleep_late < 0.1
    assert wake_latency < 0.1


def test_a_dialog_opened_for_a_coroutine_does_not_freeze_asyncio(root: tkinter.Tk) -> None:
    bridge = TkBridge(root)
    ticks_while_open = 0

    async def ticker() -> None:
        nonlocal ticks_while_open
        while True:
            await asyncio.sleep(0.02)
            if box_is_open(root):
                ticks_while_open += 1
                if ticks_while_open == 5:
                    close_box(root, "yes")

    async def main() -> bool:
        async with asyncio.TaskGroup() as tg:
            tick_task = tg.create_task(ticker())
            answer = await bridge.call_in_tk(
                tkinter.messagebox.askyesno, "Question", "Go on?", parent=root
            )
            tick_task.cancel()
        return answer

    try:
        assert bridge.run_until_complete(bridge.spawn(main())) is True
    finally:
        bridge.close()
    assert ticks_while_open == 5


def test_a_dialog_opened_inside_a_coroutine_pauses_asyncio_without_spinning(
    root: tkinter.Tk,
) -> None:
    # The documented anti-pattern: asyncio cannot step while one of its own
    # callbacks runs tk's nested loop. It must pause quietly, even with a
    # socket ready to read (so the loop's fd stays readable: tk must not
    # call back on it in a busy loop), and carry on once the box is closed.
    bridge = TkBridge(root)
    ticks = 0
    seen: dict[str, float] = {}
    ours, theirs = socket.socketpair()
    ours.setblocking(False)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    def box_opened() -> None:
        theirs.send(b"ready")  # asyncio's fd becomes readable now
        seen.update(cpu=time.process_time(), ticks=ticks)
        root.after(500, box_checked)

    def box_checked() -> None:
        seen.update(cpu=time.process_time() - seen["cpu"], ticks=ticks - seen["ticks"])
        close_box(root)

    async def main() -> tuple[bytes, int]:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            tick_task = tg.create_task(ticker())
            received = tg.create_task(loop.sock_recv(ours, 100))
            await asyncio.sleep(0.05)
            root.after(0, box_opened)
            tkinter.messagebox.showinfo("Blocking", "opened inside a coroutine", parent=root)
            before = ticks
            data = await received
            await asyncio.sleep(0.1)
            tick_task.cancel()
        return data, ticks - before

    try:
        data, ticks_after = bridge.run_until_complete(bridge.spawn(main()))
    finally:
        bridge.close()
        ours.close()
        theirs.close()
    assert seen["ticks"] == 0, "asyncio cannot run inside its own callback"
    assert seen["cpu"] < 0.2, f"tk spun on the ready fd: {seen['cpu']:.3f} s CPU in 0.5 s"
    assert data == b"ready"
    assert ticks_after >= 3, "asyncio did not carry on after the box closed"


def test_closing_the_window_cancels_the_download(
    root: tkinter.Tk, threaded_server: FileServer, tmp_path: Path
) -> None:
    urls = slow_files(threaded_server, 3, size=256 * 1024)  # ~2 s each
    progress = 0
    window: DownloadWindow

    def on_event(event: DownloadEvent) -> None:
        nonlocal progress
        if isinstance(event, DownloadProgress):
            progress += 1
            if progress == 6:
                window.close()  # what the window manager's close button calls

    window = DownloadWindow(
        urls, tmp_path / "out", concurrency=3, announce=False, on_event=on_event, root=root
    )
    window.download_button.invoke()
    assert window.run() is None  # returns once the window is destroyed
    assert window.task is not None
    assert window.task.cancelled()
    assert window.bridge.loop.is_closed()
    assert not _alive(root)
    left = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert left, "cancelled downloads keep their .part files for a resume"
    assert all(name.endswith((".part", ".meta")) for name in left), left


@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool is not installed")
def test_a_real_mouse_click_starts_the_download(
    root: tkinter.Tk, display: str, threaded_server: FileServer, tmp_path: Path
) -> None:
    urls = slow_files(threaded_server, 2)

    started = False

    def on_event(event: DownloadEvent) -> None:
        nonlocal started
        if isinstance(event, DownloadStarted) and not started:
            started = True
            root.quit()

    window = DownloadWindow(
        urls, tmp_path / "out", concurrency=2, announce=False, on_event=on_event, root=root
    )
    try:
        root.wait_visibility(window.download_button)
        button = window.download_button
        x = button.winfo_rootx() + button.winfo_width() // 2
        y = button.winfo_rooty() + button.winfo_height() // 2
        clicker = subprocess.Popen(
            ["xdotool", "mousemove", "--sync", str(x), str(y), "click", "1"],
            env={"DISPLAY": display, "PATH": "/usr/bin:/bin"},
        )
        root.mainloop()  # until the first DownloadStarted
        assert clicker.wait(10) == 0
        assert window.task is not None
        assert str(button["state"]) == tkinter.DISABLED
        results = window.bridge.run_until_complete(window.task)
        assert [r.status for r in results] == ["ok", "ok"]
        assert str(button["state"]) == tkinter.NORMAL
    finally:
        window.bridge.close()
