"""The catalog: the backing store's repositories, as `registry:2` lists them.

Listing walks the store's repositories/ tree: one LIST per directory (S3:
per 1000 entries of it), so the answer is kept for --tag-ttl and computed once
for concurrent requests, and bounded at LIMIT repositories.
"""

from __future__ import annotations

import time

from ..backing.distribution import DistributionStore
from ..singleflight import SingleFlight

__all__ = ["LIMIT", "Catalog"]

LIMIT = 100_000  # repositories a catalog lists at most


class Catalog:
    def __init__(self, store: DistributionStore, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._known: tuple[float, list[str], bool] | None = None
        self._flights: SingleFlight[str, tuple[list[str], bool]] = SingleFlight()

    async def names(self) -> tuple[list[str], bool]:
        """Repository names, sorted, and whether the list was cut at LIMIT.
        Raises BackendError."""
        if self._known is not None and time.monotonic() - self._known[0] < self._ttl:
            return self._known[1], self._known[2]
        names, cut = await self._flights.run("", lambda: self._store.repositories(LIMIT))
        self._known = (time.monotonic(), names, cut)
        return names, cut

    async def close(self) -> None:
        await self._flights.close()
