"""Putting the cache together: one place, for the server and for `warm`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..backing.distribution import DistributionStore
from ..backing.opening import open_store
from ..config import CacheSettings, FleetSettings, StoreSettings
from ..disk.eviction import CacheLimit, Evictor
from ..disk.learned import Learned
from ..disk.store import DiskStore
from ..fill.reading import Reading, RetryPolicy
from ..fill.registry import Fills
from ..fill.slots import FairSlots
from ..fill.sources import PartPolicy, Sizes
from ..fleet.coordination import Fleet, open_fleet
from ..origin.holdings import Holdings
from ..origin.mapping import OriginMap, open_origin_map
from ..retention.records import RetentionRecords
from ..telemetry.metrics import Metrics
from .blobs import BlobCache
from .catalog import Catalog
from .links import LinkCache
from .manifests import ManifestCache
from .referrers import Referrers
from .sources import BlobSources
from .write_through import WriteThrough

__all__ = ["Cache", "open_cache"]

log = logging.getLogger(__name__)

_UNSUPPORTED = "off: the backing store does not honour conditional writes"


@dataclass
class Cache:
    """The cache's parts, put together in one place for the server and for `warm`."""

    store: DistributionStore
    disk: DiskStore
    learned: Learned
    links: LinkCache
    evictor: Evictor
    blobs: BlobCache
    manifests: ManifestCache
    referrers: Referrers
    catalog: Catalog
    fleet: str  # coordination with the other hosts: "on", "off" or why it is off
    coordination: Fleet | None = None  # the fleet, while it coordinates
    origins: OriginMap = field(default_factory=OriginMap)  # which origin serves a name


@contextlib.asynccontextmanager
async def open_cache(
    cache: CacheSettings,
    store_settings: StoreSettings,
    metrics: Metrics,
    fleet_settings: FleetSettings | None = None,
    confined: bool = False,
) -> AsyncIterator[Cache]:
    """The cache over the backing store, with its maintenance running in the
    background; on exit fills are cancelled and their temp files removed.
    `confined`: clients may read only some repositories (cache/sources.py)."""
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(store_settings, metrics.s3))
        origins = await stack.enter_async_context(open_origin_map(store_settings.upstreams))
        fleet = None
        if fleet_settings is not None:
            fleet = await stack.enter_async_context(
                open_fleet(fleet_settings, store.backend, store, metrics.fleet, metrics.origin)
            )
        fleet_state = "off" if fleet_settings is None else "on" if fleet else _UNSUPPORTED
        disk = await DiskStore.open(cache.directory)
        metrics.disk.track(lambda: float(disk.bytes_used), disk.layout.root)
        learned = Learned.create(disk.layout)
        links = LinkCache(store, learned, negative_ttl=cache.tag_ttl)
        limit = CacheLimit(cache.max_bytes, cache.max_share).bytes_for(cache.directory)
        evictor = Evictor(disk, limit, metrics.disk)
        reading = Reading(RetryPolicy(attempts=cache.fill_attempts), metrics.fills)
        slots = FairSlots(store_settings.max_concurrency, metrics.s3)
        sizes = Sizes()
        fills = Fills(
            disk,
            evictor,
            reading,
            slots,
            sizes,
            metrics.lookups,
            metrics.prefetch,
            cache.verified_ranges,
        )
        through = WriteThrough(store, disk, links, metrics.origin)
        holdings = Holdings() if confined else None
        sources = BlobSources(
            store,
            disk,
            links,
            origins,
            fills,
            slots,
            PartPolicy(store_settings.part_size, store_settings.fill_concurrency),
            sizes,
            through,
            metrics.origin,
            fleet,
            holdings,
        )
        records = RetentionRecords(
            store.backend, store.layout, cache.record_use_every, metrics.retention
        )
        manifests = ManifestCache(
            store,
            disk,
            learned,
            links,
            cache.tag_ttl,
            metrics.lookups,
            metrics.origin,
            origins,
            fleet,
            records,
            holdings,
        )
        parts = Cache(
            store,
            disk,
            learned,
            links,
            evictor,
            BlobCache(sources, fills, through),
            manifests,
            Referrers(store, manifests, origins, cache.tag_ttl),
            Catalog(store, cache.tag_ttl),
            fleet_state,
            fleet,
            origins,
        )
        maintenance = asyncio.create_task(evictor.run(), name="cache maintenance")
        if limit is not None:
            log.info("cache limit: %d bytes", limit)
        try:
            yield parts
        finally:
            maintenance.cancel()
            await parts.blobs.close()
            await sizes.close()
            await parts.manifests.close()
            await records.settled()
            await parts.referrers.close()
            await parts.catalog.close()
            await links.close()
