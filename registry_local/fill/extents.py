"""Which bytes of a blob a fill holds: disjoint ranges, merged as they grow.

A fill writes a blob into its temp file in pieces, not only from the front: a
reader waiting for a range has its bytes fetched first (fill.py). `Extents`
keeps the written ranges as sorted, disjoint [start, end) pairs, merging
neighbours, so "is this byte here, and how far does the run go" is a bisection.
"""

from __future__ import annotations

import bisect

__all__ = ["Extents"]


class Extents:
    """Sorted, disjoint byte ranges [start, end)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.total = 0  # bytes in all ranges

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"Extents({list(zip(self._starts, self._ends, strict=True))})"

    def add(self, start: int, end: int) -> None:
        """Hold [start, end) too; it may touch or overlap what is held."""
        if end <= start:
            return
        # Every range that overlaps or touches [start, end) merges into one.
        first = bisect.bisect_left(self._ends, start)
        last = bisect.bisect_right(self._starts, end)
        if first < last:
            start = min(start, self._starts[first])
            end = max(end, self._ends[last - 1])
            self.total -= sum(self._ends[i] - self._starts[i] for i in range(first, last))
        self._starts[first:last] = [start]
        self._ends[first:last] = [end]
        self.total += end - start

    def run_from(self, offset: int) -> int:
        """Where the run of held bytes that `offset` is in ends; `offset` itself
        when that byte is not held."""
        index = bisect.bisect_right(self._starts, offset) - 1
        if index >= 0 and self._ends[index] > offset:
            return self._ends[index]
        return offset

    def covers(self, start: int, end: int) -> bool:
        """Whether every byte of [start, end) is held."""
        return end <= start or self.run_from(start) >= end

    def next_start(self, offset: int) -> int | None:
        """The start of the first range beginning after `offset`, if any."""
        index = bisect.bisect_right(self._starts, offset)
        return self._starts[index] if index < len(self._starts) else None
