"""A small least-recently-used map with a weight limit, for in-memory caches."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BoundedDict"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedDict(Generic[K, V]):
    """Keeps the most recently used entries whose weights sum to at most `limit`."""

    def __init__(self, limit: int, weigh: Callable[[V], int] = lambda _: 1) -> None:
        self._limit = limit
        self._weigh = weigh
        self._items: OrderedDict[K, V] = OrderedDict()
        self._weight = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        weight = self._weigh(value)
        if weight > self._limit:
            return
        self._items[key] = value
        self._weight += weight
        while self._weight > self._limit:
            _, evicted = self._items.popitem(last=False)
            self._weight -= self._weigh(evicted)

    def pop(self, key: K) -> V | None:
        value = self._items.pop(key, None)
        if value is not None:
            self._weight -= self._weigh(value)
        return value
