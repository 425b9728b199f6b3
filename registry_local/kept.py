"""Answers kept for a while: computed once for concurrent callers, reused until
they are older than a time to live, the most recently used kept up to a count."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from .lru import BoundedDict
from .singleflight import SingleFlight

__all__ = ["Kept"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """Answers by key, computed once for concurrent callers and reused for `ttl` seconds,
    the most recently used `entries` of them kept."""

    def __init__(self, ttl: float, entries: int) -> None:
        self._ttl = ttl
        self._answers: BoundedDict[K, tuple[float, V]] = BoundedDict(entries)
        self._flights: SingleFlight[K, V] = SingleFlight()

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        """The answer for `key`: the one kept if fresh, else `compute`'s (one
        computation however many ask at once). Raises what `compute` raises."""
        known = self._answers.get(key)
        if known is not None and time.monotonic() - known[0] < self._ttl:
            return known[1]
        answer = await self._flights.run(key, compute)
        self._answers.put(key, (time.monotonic(), answer))
        return answer

    def forget(self, key: K) -> None:
        self._answers.pop(key)

    async def close(self) -> None:
        await self._flights.close()
