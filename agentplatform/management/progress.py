"""A progress bar for long management commands (to stderr, redrawn in place)."""

from __future__ import annotations

import sys
import time
from typing import Protocol


class Writable(Protocol):
    def write(self, text: str, /) -> object: ...
    def flush(self) -> None: ...


class ProgressBar:
    def __init__(self, total: int, label: str, stream: Writable = sys.stderr, width: int = 30):
        self.total, self.label, self.stream, self.width = total, label, stream, width
        self.done = 0
        self.started = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        fraction = self.done / self.total if self.total else 1.0
        filled = int(self.width * fraction)
        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{fraction:6.1%} {self.done}/{self.total} ({rate:.0f}/s)"
        )
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
