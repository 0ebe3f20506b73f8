"""A responsive tkinter window whose work runs as coroutines.

The lesson's window has "Download" and "About" buttons; its download blocks
the GUI until it moves to a thread. Here the download is a coroutine on an
asyncio event loop that shares the GUI thread with tk: :class:`TkBridge`
marries the two loops, :class:`DownloadWindow` is the lesson's window.

How the bridge works, and why
=============================

Tk's loop drives; asyncio is run in short *steps* from tk callbacks.

* **Readiness, not polling.** The asyncio loop is a
  :class:`asyncio.SelectorEventLoop` built on a selector we create (an
  ``epoll``/``kqueue`` selector, which has a file descriptor of its own).
  That descriptor becomes readable whenever any socket or pipe asyncio
  watches is ready, including the loop's self-pipe that
  ``call_soon_threadsafe`` writes to. It is registered with tk's
  ``createfilehandler``, so tk's notifier wakes us exactly when asyncio has
  I/O to handle.
* **Timers from the loop itself.** Every iteration of asyncio's loop
  (``BaseEventLoop._run_once`` in CPython) computes how long it may sleep
  (0 when callbacks are ready, the time to the next ``call_later`` timer,
  or ``None``) and passes it to ``selector.select(timeout)``. Our selector
  lets the first iteration of a step poll without blocking; on the next
  ``select`` call it records the timeout and raises a private exception
  that unwinds ``run_forever`` (which resets the loop in its ``finally``).
  The step then arms one tk ``after`` for that timeout. While callbacks
  are ready (timeout 0) the step keeps iterating for up to
  :data:`STEP_BUDGET` seconds, then yields to tk with ``after_idle`` so a
  busy coroutine cannot starve the GUI. No private attribute of the loop
  is read; the deadline is exactly the one the loop would have slept on.
  (Peeking at the loop's private ``_selector``, ``_ready`` and
  ``_scheduled`` and running one iteration with ``stop(); run_forever()``
  also works, but that iteration always polls with timeout 0, so the next
  deadline has to be recomputed by hand from the loop's internals. A
  selector we construct is a public argument of the loop, and the timeout
  it receives is the loop's own answer.) What this relies on: ``select``
  is called once per iteration, before the iteration's callbacks, and an
  exception from it leaves ``run_forever`` through its ``finally``, which
  puts the loop back in its not-running state (CPython 3.11 to 3.13).
* **Modal dialogs do not freeze asyncio.** ``tkinter.messagebox`` runs a
  nested tk event loop (``vwait``) until the box closes. The file handler
  and ``after`` timers are tk event sources, so the nested loop keeps
  running asyncio steps: the download moves on while About is open.

The popular alternatives: calling ``root.update()`` from a coroutine every
~20 ms, or ``root.after(20, ...)`` running the loop, cost latency (up to a
tick) and idle CPU (a wake-up every tick), and the first one stops asyncio
entirely while a modal dialog runs its own loop inside ``update()``. Here an
idle window sleeps in tk's notifier until the X server, a socket or a timer
has something to say.

Rules that follow from the design
---------------------------------

* Do not open modal dialogs (or call ``root.update()``) *inside a
  coroutine*: asyncio cannot run a step while one of its own callbacks is
  still on the stack, so it pauses until the dialog closes (quietly: the
  bridge stops watching the loop's fd meanwhile, so tk does not spin on
  it). Await :meth:`TkBridge.call_in_tk` instead, which runs the function
  from tk's own loop, where the nested loop keeps asyncio going.
* Tk callbacks (button commands) run while asyncio is between steps; start
  coroutines from them with :meth:`TkBridge.spawn`.
* Tk objects belong to the thread that made them, including their last
  reference: a window left in a reference cycle may be freed by the cyclic
  GC in another thread, and Tcl aborts the process when its interpreter is
  deleted there. Applications keep their window to the end; code that
  makes and drops windows while other threads run should ``gc.collect()``
  in the GUI thread after closing one (the GUI tests do).
* The loop must be a selector loop whose selector has a ``fileno()``
  (Linux epoll, BSD/macOS kqueue). uvloop hides its poller, so the GUI
  always uses asyncio's own loop. Tk must be built with threads (every
  current build is): otherwise tkinter's ``mainloop`` itself polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import selectors
import time
import tkinter
import tkinter.messagebox
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from tkinter import ttk
from typing import Any, Final, ParamSpec, TypeVar

from asyncconc.downloader import (
    DownloadEvent,
    DownloadFinished,
    DownloadProgress,
    DownloadResult,
    download,
)

__all__ = ["STEP_BUDGET", "DownloadWindow", "TkBridge", "run_download_window"]

T = TypeVar("T")
P = ParamSpec("P")

STEP_BUDGET: Final = 0.02
"""Seconds one step may keep running ready asyncio callbacks before tk runs."""

_SHUTDOWN_TIMEOUT: Final = 10.0


class _Pause(BaseException):
    """Unwinds ``run_forever`` when an iteration is done; never escapes a step.

    A BaseException so that no ``except Exception`` on the way can eat it.
    """


class _SteppingSelector(selectors.DefaultSelector):
    """The loop's selector; inside a step it never blocks (see the module doc).

    Outside a step (for example while :meth:`TkBridge.close` finishes the
    loop's tasks) it is an ordinary blocking selector.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stepping = False
        self._polled = False
        self._deadline = 0.0
        self.wanted: float | None = 0.0

    def begin_step(self) -> None:
        self._stepping = True
        self._polled = False
        self._deadline = time.monotonic() + STEP_BUDGET
        self.wanted = 0.0

    def end_step(self) -> None:
        self._stepping = False

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if not self._stepping:
            events: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
            return events
        if not self._polled or (timeout == 0 and time.monotonic() < self._deadline):
            self._polled = True
            events = super().select(0)
            return events
        self.wanted = timeout
        raise _Pause


class TkBridge:
    """One tk root and one asyncio loop sharing the GUI thread.

    The bridge creates its own :class:`asyncio.SelectorEventLoop` and owns
    it: :meth:`close` cancels what is left, waits for it (bounded), and
    closes the loop. The root belongs to the caller; the bridge only adds a
    file handler and timers to it (removed by :meth:`close`).

    Use::

        root = tkinter.Tk()
        bridge = TkBridge(root)
        try:
            bridge.spawn(main_coroutine())
            bridge.run()        # tk's mainloop, until the root is destroyed
        finally:
            bridge.close()
    """

    def __init__(self, root: tkinter.Misc) -> None:
        selector = _SteppingSelector()
        if not hasattr(selector, "fileno"):
            selector.close()
            raise RuntimeError(
                f"{type(selector).__name__} has no file descriptor for tk to watch; "
                "the tk bridge needs epoll or kqueue"
            )
        self.root = root
        self._selector = selector
        self.loop = asyncio.SelectorEventLoop(selector)
        self._fd: int = selector.fileno()
        self._timer: str | None = None
        self._idle: str | None = None
        self._closed = False
        self._watching = False
        self._watch()
        self._kick()

    # --- stepping ----------------------------------------------------------

    def _watch(self) -> None:
        self.root.tk.createfilehandler(self._fd, tkinter.READABLE, self._on_readable)
        self._watching = True

    def _on_readable(self, fd: int, mask: int) -> None:
        del fd, mask
        self._step()

    def _on_timer(self) -> None:
        self._timer = None
        self._step()

    def _on_idle(self) -> None:
        self._idle = None
        self._step()

    def _kick(self) -> None:
        """Run a step as soon as tk is idle (after the current callback)."""
        if self._idle is None and not self._closed:
            self._idle = self.root.after_idle(self._on_idle)

    def _step(self) -> None:
        loop = self.loop
        if self._closed or loop.is_closed():
            return
        if loop.is_running():
            # A coroutine is spinning tk's loop (a modal dialog or update()
            # inside a coroutine): asyncio cannot re-enter itself. It goes
            # on when that callback returns; see the module doc. Until then
            # stop watching the fd, or tk would call us back at once, forever.
            if self._watching:
                self._watching = False
                self.root.tk.deletefilehandler(self._fd)
            return
        if self._timer is not None:
            self.root.after_cancel(self._timer)
            self._timer = None
        self._selector.begin_step()
        try:
            loop.run_forever()
        except _Pause:
            wanted = self._selector.wanted
        else:
            wanted = 0.0  # somebody called loop.stop(): carry on next time
        finally:
            self._selector.end_step()
        if not self._watching:
            self._watch()
        if wanted is None:
            return  # only I/O (the file handler) can wake us
        if wanted <= 0:
            self._kick()
        else:
            ms = max(1, math.ceil(wanted * 1000))
            self._timer = self.root.after(ms, self._on_timer)

    # --- public --------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Start ``coro`` as a task on the bridge's loop.

        Call it from the GUI thread (a tk callback, or a coroutine on the
        bridge). Other threads use ``bridge.loop.call_soon_threadsafe``,
        which wakes the bridge through the loop's self-pipe.
        """
        if self._closed:
            coro.close()
            raise RuntimeError("the TkBridge is closed")
        task = self.loop.create_task(coro)
        self._kick()
        return task

    def call_in_tk(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        """Run ``fn(*args)`` from tk's loop, not from inside an asyncio step.

        Await the returned future from a coroutine to open a modal dialog
        without pausing asyncio (see the module doc). Its exception, if
        any, is set on the future.
        """
        future: asyncio.Future[T] = self.loop.create_future()

        def run() -> None:
            if self._closed or future.done():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                if not future.done():
                    future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                if not future.done():
                    future.set_result(result)
            self._kick()

        self.root.after_idle(run)
        return future

    def run(self) -> None:
        """Run tk's mainloop (and asyncio with it) until it is quit or destroyed."""
        self.root.mainloop()

    def run_until_complete(self, future: asyncio.Future[T]) -> T:
        """Run tk's mainloop until ``future`` is done; return its result.

        Raises :class:`RuntimeError` if the window is destroyed first.
        """
        if not future.done():
            future.add_done_callback(lambda _: self.root.quit())
        while not future.done():
            if not _exists(self.root):
                raise RuntimeError("the tk window was destroyed before the future completed")
            self.root.mainloop()  # returns on quit(), ours or anybody's
        return future.result()

    def close(self) -> None:
        """Cancel the loop's tasks, wait for them (bounded), close the loop.

        Idempotent. The root is left as it is (destroyed or not).
        """
        if self._closed:
            return
        self._closed = True
        loop = self.loop
        try:
            with contextlib.suppress(tkinter.TclError):  # the interpreter may be gone
                if self._watching:
                    self.root.tk.deletefilehandler(self._fd)
                for pending in (self._timer, self._idle):
                    if pending is not None:
                        self.root.after_cancel(pending)
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                # Outside a step the selector blocks normally: this is the
                # plain run_until_complete, bounded so a stuck task cannot
                # keep the process alive.
                gathered = asyncio.gather(*tasks, return_exceptions=True)
                loop.run_until_complete(asyncio.wait_for(gathered, _SHUTDOWN_TIMEOUT))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _exists(widget: tkinter.Misc) -> bool:
    try:
        return bool(widget.winfo_exists())
    except tkinter.TclError:  # "application has been destroyed"
        return False


class DownloadWindow:
    """The lesson's window: "Download" and "About", the download a coroutine.

    ``urls`` are downloaded into ``dest`` with :func:`asyncconc.download`
    (``concurrency`` at a time) when Download is pressed. While it runs the
    button is disabled and a progress bar and label show files and bytes;
    at the end the button comes back. About opens a message box; asyncio
    keeps running while it is open. Closing the window cancels the download
    (its ``.part`` files are kept, connections closed) and then destroys it.

    ``announce``: show the lesson's "Download complete!" box at the end.
    ``on_event``: also called with every :class:`~asyncconc.DownloadEvent`.
    """

    def __init__(
        self,
        urls: Sequence[str],
        dest: str | os.PathLike[str],
        *,
        concurrency: int = 4,
        title: str = "asyncconc: responsive GUI",
        announce: bool = True,
        on_event: Callable[[DownloadEvent], None] | None = None,
        root: tkinter.Tk | None = None,
    ) -> None:
        self.urls = list(urls)
        self.dest = Path(dest)
        self.concurrency = concurrency
        self.announce = announce
        self._on_event = on_event
        self.root = root if root is not None else tkinter.Tk()
        self.root.title(title)
        self.root.geometry("360x150")
        self.bridge = TkBridge(self.root)
        self.task: asyncio.Task[list[DownloadResult]] | None = None
        self.results: list[DownloadResult] | None = None
        self.files_done = 0
        self.bytes_done = 0
        self._closing = False

        self.status = tkinter.StringVar(self.root, value=f"{len(self.urls)} files to download")
        tkinter.Label(self.root, textvariable=self.status, anchor="w").pack(
            side="top", fill="x", padx=8, pady=(10, 4)
        )
        self.progress = ttk.Progressbar(self.root, mode="determinate", maximum=1.0)
        self.progress.pack(side="top", fill="x", padx=8)
        panel = tkinter.Frame(self.root)
        self.download_button = tkinter.Button(panel, text="Download", command=self.start_download)
        self.download_button.pack(side="left", padx=8)
        self.about_button = tkinter.Button(panel, text="About", command=self.show_about)
        self.about_button.pack(side="right", padx=8)
        panel.pack(side="bottom", pady=10)
        self.root.protocol("WM_DELETE_WINDOW", self.close)

    # --- tk callbacks ----------------------------------------------------------

    def start_download(self) -> None:
        """Download's command: start the coroutine unless one is running."""
        if self.task is not None and not self.task.done():
            return
        self.download_button.config(state=tkinter.DISABLED)
        self.files_done = self.bytes_done = 0
        self.results = None
        self.task = self.bridge.spawn(self._download())

    def show_about(self) -> None:
        """About's command: a modal box; asyncio runs on while it is open."""
        tkinter.messagebox.showinfo(
            "About", "asyncconc: the lesson's window on an asyncio loop", parent=self.root
        )

    def close(self) -> None:
        """Cancel the download, if any, and destroy the window once it has stopped."""
        if self._closing:
            return
        self._closing = True
        task = self.task
        if task is None or task.done():
            self.root.destroy()
            return
        self.status.set("Cancelling...")
        task.cancel()
        task.add_done_callback(lambda _: self.root.destroy())

    # --- the coroutine -----------------------------------------------------------

    def _event(self, event: DownloadEvent) -> None:
        if isinstance(event, DownloadProgress):
            self.bytes_done += event.nbytes
        elif isinstance(event, DownloadFinished):
            self.files_done += 1
        self._show_progress()
        if self._on_event is not None:
            self._on_event(event)

    def _show_progress(self) -> None:
        total = len(self.urls)
        kib = self.bytes_done / 1024
        self.status.set(f"Downloading: {self.files_done} of {total} files, {kib:,.0f} KiB")
        self.progress["value"] = self.files_done / total if total else 1.0

    async def _download(self) -> list[DownloadResult]:
        try:
            self._show_progress()
            results = await download(
                self.urls, self.dest, concurrency=self.concurrency, on_event=self._event
            )
            self.results = results
            failed = sum(1 for r in results if not r.ok)
            note = f", {failed} failed" if failed else ""
            self.status.set(
                f"Done: {len(results) - failed} of {len(results)} files{note}, "
                f"{self.bytes_done / 1024:,.0f} KiB"
            )
            if self.announce and not self._closing:
                await self.bridge.call_in_tk(
                    tkinter.messagebox.showinfo, "Prompt", "Download complete!", parent=self.root
                )
            return results
        finally:
            if not self._closing:
                with contextlib.suppress(tkinter.TclError):  # the window may be gone
                    self.download_button.config(state=tkinter.NORMAL)

    # --- running ----------------------------------------------------------------

    def run(self) -> list[DownloadResult] | None:
        """Show the window until it is closed; the results of the last download."""
        try:
            self.bridge.run()
        finally:
            self.bridge.close()
        return self.results


def run_download_window(
    urls: Sequence[str],
    dest: str | os.PathLike[str],
    *,
    concurrency: int = 4,
    announce: bool = True,
) -> list[DownloadResult] | None:
    """Open :class:`DownloadWindow` and run it until it is closed.

    Raises :class:`tkinter.TclError` when there is no display.
    """
    return DownloadWindow(urls, dest, concurrency=concurrency, announce=announce).run()
