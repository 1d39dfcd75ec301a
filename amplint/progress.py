"""A progress line for long runs on a terminal; silent in pipes, CI logs and pre-commit."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

#: Runs shorter than this never show progress, so quick runs stay clean.
DELAY_SECONDS = 2.0
_REFRESH_SECONDS = 0.1
_WIDTH = 30


class Progress:
    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._enabled = enabled and self._stream.isatty()
        self._started = time.monotonic()
        self._last_drawn = 0.0
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        if not self._enabled or total == 0:
            return
        now = time.monotonic()
        if now - self._started < DELAY_SECONDS or now - self._last_drawn < _REFRESH_SECONDS:
            return
        self._last_drawn = now
        filled = _WIDTH * done // total
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self._stream.write(f"\r[{bar}] {done}/{total} files")
        self._stream.flush()
        self._drawn = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._drawn:
            self._stream.write("\r" + " " * (_WIDTH + 30) + "\r")
            self._stream.flush()
