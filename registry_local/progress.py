"""Progress of long transfers: a live line on a terminal, a line per item elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "human_bytes", "plural"]


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def plural(number: int, noun: str) -> str:
    """`1 blob`, `2 blobs`."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class Progress:
    """Counts bytes and items; redraws one line at most 10 times a second on a TTY."""

    def __init__(
        self,
        label: str,
        total_bytes: int,
        total_items: int,
        stream: TextIO = sys.stderr,
        lines_when_piped: bool = True,
    ) -> None:
        self.label = label
        self.total_bytes = total_bytes
        self.total_items = total_items
        self.done_bytes = 0
        self.done_items = 0
        self._stream = stream
        self._live = stream.isatty()
        self._lines = lines_when_piped  # off: nothing at all unless on a terminal
        self._drawn = 0.0

    def advance(self, count: int) -> None:
        self.done_bytes += count
        if self._live and time.monotonic() - self._drawn > 0.1:
            self._draw()

    def item_done(self, what: str) -> None:
        self.done_items += 1
        if self._live:
            self._draw()
        elif self._lines:
            of = f"/{self.total_items}" if self.total_items else ""  # 0: not known
            print(
                f"{self.label}: {what} ({self.done_items}{of})",
                file=self._stream,
                flush=True,
            )

    def finish(self) -> None:
        if self._live:
            self._draw()
            print(file=self._stream, flush=True)

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        total = f" / {human_bytes(self.total_bytes)}" if self.total_bytes else ""  # 0: unknown
        print(
            f"\r{self.label}: {human_bytes(self.done_bytes)}{total}, "
            f"{self.done_items}{f'/{self.total_items}' if self.total_items else ''} items",
            end="",
            file=self._stream,
            flush=True,
        )
