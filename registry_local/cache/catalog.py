"""The catalog: the backing store's repositories, as `registry:2` lists them.

Listing walks the store's repositories/ tree: one LIST per directory (S3:
per 1000 entries of it), so the answer is kept for --tag-ttl and computed once
for concurrent requests, and bounded at LIMIT repositories.
"""

from __future__ import annotations

import logging

from ..backing.distribution import DistributionStore
from ..kept import Kept

__all__ = ["LIMIT", "Catalog"]

log = logging.getLogger(__name__)

LIMIT = 100_000  # repositories a catalog lists at most


class Catalog:
    """The repository names for /v2/_catalog, listed from the backing store, kept for
    --tag-ttl, and listed again after a push or delete on this host."""

    def __init__(self, store: DistributionStore, ttl: float) -> None:
        self._store = store
        self._kept: Kept[str, list[str]] = Kept(ttl, 1)

    async def names(self) -> list[str]:
        """Repository names, sorted, at most LIMIT. Raises BackendError."""
        return await self._kept.get("", self._list)

    def changed(self) -> None:
        """This host pushed or deleted a manifest: list the store again next time."""
        self._kept.forget("")

    async def _list(self) -> list[str]:
        names, cut = await self._store.repositories(LIMIT)
        if cut:
            log.warning("the catalog lists the first %d repositories found only", LIMIT)
        return names

    async def close(self) -> None:
        await self._kept.close()
