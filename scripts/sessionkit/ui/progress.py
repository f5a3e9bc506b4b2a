"""A progress line on stderr for long phases, shown only when stderr is a terminal."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, TextIO

SHOW_AFTER_S = 1.0
REDRAW_S = 0.2


class Progress:
    def __init__(self, stream: Optional[TextIO] = sys.stderr) -> None:
        self.enabled = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
        self.stream = stream
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = False

    @classmethod
    def for_terminal(cls) -> "Progress":
        return cls(sys.stderr)

    def phase(self, name: str) -> None:
        self.started = time.monotonic()
        self._name = name

    def tick(self, label: str, n: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started < SHOW_AFTER_S or (now - self.last < REDRAW_S and n != total):
            return
        self.last = now
        self.shown = True
        assert self.stream is not None
        self.stream.write(f"\r{label}: {n}/{total}\x1b[K")
        self.stream.flush()

    def note(self, line: str) -> None:
        """A line that stays (one per batch of a run in batches), on a terminal only."""
        if not self.enabled:
            return
        assert self.stream is not None
        self.stream.write(("\r\x1b[K" if self.shown else "") + line + "\n")
        self.stream.flush()
        self.shown = False

    def done(self) -> None:
        if self.shown and self.stream is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    @contextmanager
    def working(self, label: str) -> Iterator[None]:
        """A phase with no count to tick (extracting an archive, reading a source home): after a
        second, `label... 3 s` redrawn on a terminal until the phase ends, then cleared."""
        if not self.enabled:
            yield
            return
        stop = threading.Event()
        started = time.monotonic()

        def draw() -> None:
            if stop.wait(SHOW_AFTER_S):
                return
            while True:
                assert self.stream is not None
                self.stream.write(f"\r{label}... {int(time.monotonic() - started)} s\x1b[K")
                self.stream.flush()
                self.shown = True
                if stop.wait(REDRAW_S):
                    return

        worker = threading.Thread(target=draw, name="progress", daemon=True)
        worker.start()
        try:
            yield
        finally:
            stop.set()
            worker.join()
            self.done()
