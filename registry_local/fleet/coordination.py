"""One origin read per blob for the whole fleet: hosts coordinate through the bucket.

Every host of a fleet fills from the same bucket; behind it, an origin registry
(Docker Hub, ECR...) is slow, metered and rate-limited. When many hosts miss
the same new image at once, only one of them may ask the origin for each blob,
manifest and tag. The bucket they share is the coordinator:

    leases.py    who reads what for the fleet: S3 conditional writes
    staging.py   blobs in the bucket part by part while the holder fills them
    stager.py    the holder's staging of one blob, and the blobs it stages now
    peers.py     reading another host's fill, and hearing of its staged parts
    streams.py   a follower's streams over staged parts
    blob.py      one blob's life: holder or follower, staged, composed, linked
    here         the fleet as one host sees it; tags and manifests (`once`)

Manifests and tags take the same leases, but followers simply wait for the
holder's answer to appear in the bucket: they are small. Under faults (a holder
killed mid-fill) the origin may be read again, for what the dead holder had not
staged, by the host that takes the lease over, but never by two hosts at the
same moment.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ..backing.backend import Backend
from ..backing.distribution import DistributionStore
from ..config import FleetSettings
from ..errors import BackendError
from ..oci.digest import Digest
from ..origin.mapping import OriginRepo
from ..telemetry.metrics import FleetRecorder, OriginRecorder
from .blob import FleetBlob, FleetTools
from .leases import Backoff, Leases
from .peers import PeerClient, open_peer_client
from .stager import Holding
from .staging import Staging

__all__ = ["Fleet", "open_fleet"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Fleet:
    """The hosts of one bucket, seen from this one; see the module docstring."""

    def __init__(
        self,
        leases: Leases,
        peers: PeerClient,
        staging: Staging,
        store: DistributionStore,
        metrics: FleetRecorder,
        origin_metrics: OriginRecorder,
    ) -> None:
        self._leases = leases
        # The blobs this host holds the lease of and stages, for followers' polls.
        self.holding = Holding()
        self._tools = FleetTools(
            leases,
            peers,
            staging,
            store,
            self.holding,
            metrics,
            origin_metrics,
            max(60.0, 20 * leases.ttl),
        )

    def blob(
        self,
        repo: OriginRepo,
        digest: Digest,
        name: str,
        publish: Callable[[], Awaitable[None]],
    ) -> FleetBlob:
        """The fleet's reading of one fill of `digest`, which `repo`'s origin
        serves, for the repository `name` (`publish`: its link is in the bucket)."""
        return FleetBlob(self._tools, repo, digest, name, publish)

    async def once(
        self,
        key: str,
        work: Callable[[], Awaitable[T]],
        done: Callable[[], Awaitable[T | None]],
    ) -> T:
        """`work()` if this host takes the lease `key` (unless `done()` finds the
        result in the bucket first); else `done()`'s result, once the holder has
        put it there. Raises BackendError, BackendUnavailable when waiting on
        another host takes longer than the wait limit."""
        async with self._leases.lease(key) as lease:
            await lease.take()
            waiting = Backoff(self._tools.wait_limit, key)
            while True:
                if lease.mine:
                    result = await done()  # another host may have finished just now
                    return result if result is not None else await work()
                if lease.other:
                    result = await done()
                    if result is not None:
                        return result
                    await waiting.pause()
                await lease.advance()


@contextlib.asynccontextmanager
async def open_fleet(
    settings: FleetSettings,
    backend: Backend,
    store: DistributionStore,
    metrics: FleetRecorder,
    origin_metrics: OriginRecorder,
) -> AsyncIterator[Fleet | None]:
    """The fleet, or None (with one clear warning) when the backing store does
    not refuse a second conditional create: then each host fills on its own."""
    leases = Leases(backend, store.layout, settings.advertise_url, settings.lease_ttl, metrics)
    try:
        supported = await leases.probe()
    except BackendError as exc:
        log.warning("fleet coordination off: could not probe the backing store: %s", exc)
        supported = False
    if not supported:
        log.warning(
            "fleet coordination off: %s does not honour conditional writes "
            "(If-None-Match), so each host reads the origin on its own",
            backend.description,
        )
        metrics.coordinating(False)
        yield None
        return
    metrics.coordinating(True)
    log.info("fleet coordination on: peers reach this host at %s", settings.advertise_url)
    staging = Staging(backend, store.layout, settings.part_size)
    async with open_peer_client(settings, metrics) as peers:
        yield Fleet(leases, peers, staging, store, metrics, origin_metrics)
