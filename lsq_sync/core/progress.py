"""Progress of a long run: a bar on a TTY, a JSON progress event every 30 s otherwise."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from lsq_sync import logs

if TYPE_CHECKING:
    from lsq_sync.logs import Logger


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds > 99 * 3600:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Counts leads done and shows the rate; thread-safe, rendering is throttled."""

    def __init__(self, label: str, *, tty: bool, stream: TextIO | None = None,
                 calls: Callable[[], int] = lambda: 0, log: Logger | None = None,
                 every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.tty = tty
        self.stream = stream or sys.stderr
        self.calls = calls
        self.log = log
        self.every_s = every_s
        self.clock = clock
        self.total = 0
        self.done = 0
        self.failed = 0
        self._start = clock()
        self._last_draw = 0.0
        self._last_event = self._start
        self._shown = False
        self._lock = threading.Lock()

    def start(self, total: int) -> None:
        self.total = total
        self._start = self.clock()
        self._last_event = self._start
        if self.tty:
            logs.set_progress_bar(self)
            self.redraw()

    def advance(self, ok: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.done += ok + failed
            self.failed += failed
        now = self.clock()
        if self.tty and now - self._last_draw >= 0.2:
            self.redraw()
        elif not self.tty and self.log is not None and now - self._last_event >= self.every_s:
            self._last_event = now
            self.log.info("progress", **self.figures())

    def figures(self) -> dict[str, Any]:
        elapsed = max(self.clock() - self._start, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        return {"done": self.done, "total": self.total, "failed": self.failed,
                "calls_per_s": round(self.calls() / elapsed, 2),
                "leads_per_s": round(rate, 2),
                "eta_s": round(left / rate) if rate > 0 else None}

    def line(self) -> str:
        f = self.figures()
        width = shutil.get_terminal_size((100, 20)).columns
        share = self.done / self.total if self.total else 1.0
        text = (f" {self.done}/{self.total} leads {share:4.0%}  {f['calls_per_s']:.1f} calls/s"
                f"  ETA {_clock(f['eta_s'])}" + (f"  {self.failed} failed" if self.failed else ""))
        bar_width = max(10, min(40, width - len(self.label) - len(text) - 4))
        filled = int(bar_width * share)
        return f"{self.label} [{'#' * filled}{'.' * (bar_width - filled)}]{text}"[: width - 1]

    def clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    def redraw(self) -> None:
        if not self.tty:
            return
        self._last_draw = self.clock()
        self.stream.write("\r\x1b[2K" + self.line())
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self.tty:
            self.redraw()
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
            logs.set_progress_bar(None)
