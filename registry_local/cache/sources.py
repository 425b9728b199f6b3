"""Where a request's blob comes from, decided once: the link check and the tier.

    for_blob(name, digest, ns)
    ├── the bucket links it in `name` ........... BucketSource (parallel parts)
    │     (for a repository an origin serves, only while the bucket still
    │      holds the blob: one that gc removed is read from the origin again)
    ├── an origin serves `name` (origin/mapping.py)
    │   ├── hosts coordinate ..................... FleetSource (the fleet's lease)
    │   └── this host alone ...................... OriginSource
    │     either way written through to the bucket for `name` once filled;
    │     with access control, bytes another repository brought (here, or to
    │     the fleet), and under an origin that decides access anything the
    │     bucket links, only once the origin confirms `name` has the blob
    └── neither ................................. BlobUnknown

For a repository no origin serves, the link check runs while the first read of
the blob starts (`Lookup.confirmed`): a cold request costs one round trip to
the bucket, not two, and nothing is handed out before the link is confirmed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..backing.distribution import DistributionStore
from ..disk.store import DiskStore
from ..errors import BlobUnknown
from ..fill.registry import Fills
from ..fill.slots import FairSlots
from ..fill.sources import (
    BucketSource,
    FillRun,
    FleetSource,
    OriginSource,
    PartPolicy,
    Sizes,
    Source,
)
from ..fleet.coordination import Fleet
from ..oci.digest import Digest
from ..origin.holdings import Holdings
from ..origin.mapping import OriginMap, OriginRepo
from ..telemetry.metrics import OriginRecorder
from .links import LinkCache, once_linked
from .write_through import WriteThrough

__all__ = ["BlobSources", "Lookup"]

T = TypeVar("T")


@dataclass(frozen=True)
class Lookup:
    """A blob's source for one request; the link check may still be running,
    to be confirmed alongside the first read (`confirmed`)."""

    source: Source
    linked: Awaitable[bool] | None = None

    async def confirmed(self, work: Awaitable[T], discard: Callable[[T], None]) -> T:
        """`work`'s result once the link is confirmed; else `discard` it and
        raise BlobUnknown."""
        if self.linked is None:
            return await work
        digest = self.source.digest
        return await once_linked(
            self.linked, work, lambda: BlobUnknown(detail={"digest": str(digest)}), discard
        )


class BlobSources:
    """The choice of where a blob's bytes come from, for every request of this
    host; see the module docstring."""

    def __init__(
        self,
        store: DistributionStore,
        disk: DiskStore,
        links: LinkCache,
        origins: OriginMap,
        fills: Fills,
        slots: FairSlots,
        parts: PartPolicy,
        sizes: Sizes,
        through: WriteThrough,
        metrics: OriginRecorder,
        fleet: Fleet | None = None,
        holdings: Holdings | None = None,
    ) -> None:
        self._store = store
        self._disk = disk
        self._links = links
        self._origins = origins
        self._fills = fills
        self._slots = slots
        self._parts = parts
        self._sizes = sizes
        self._through = through
        self._metrics = metrics
        self._fleet = fleet
        # With access control (clients may read only some repositories): a blob
        # is served in a repository only if it is in it (origin/holdings.py).
        self._holdings = holdings

    async def for_blob(self, name: str, digest: Digest, namespace: str | None = None) -> Lookup:
        """Where `digest`, read in the repository `name`, comes from; `namespace`
        is the registry containerd names with ?ns=. Raises BlobUnknown when
        neither the bucket (as far as it was asked yet) nor an origin has it."""
        repo = self._origins.repo_for(name, namespace)
        if repo is None:
            if self._links.known_blob(name, digest):
                return Lookup(self._bucket(digest))
            return Lookup(self._bucket(digest), self._links.blob_linked(name, digest))
        if self._links.known_blob(name, digest) or await self._links.blob_linked(name, digest):
            if await self._still_held(digest):
                if self._holdings is not None and Holdings.applies(repo):
                    # The bucket's `name` may be another registry's: its origin,
                    # which decides, must hold the blob.
                    return Lookup(self._bucket(digest), self._at_origin(repo, name, digest))
                return Lookup(self._bucket(digest))
            # Gone from the bucket since it was linked (gc removed what nobody
            # used): the origin has it.
            await self._links.forget_blob(name, digest)
        source = self._from_origin(repo, name, digest)
        if self._holdings is not None and (self._fleet is not None or await self._here(digest)):
            # Bytes another repository brought (here, or to the fleet's holder):
            # served in `name` only once its origin says `name` has the blob.
            # (Without access control any client may read that other repository.)
            return Lookup(source, self._at_origin(repo, name, digest))
        return Lookup(source)  # read from the origin in `name`: a 404 there is one here

    async def _here(self, digest: Digest) -> bool:
        return self._fills.present(digest) or await self._disk.discover(digest)

    async def _at_origin(self, repo: OriginRepo, name: str, digest: Digest) -> bool:
        """The origin has the blob in `name`: then it is linked there in the bucket too."""
        assert self._holdings is not None
        if not await self._holdings.holds(repo, digest, "blob"):
            return False
        self._through.blob(name, digest, None)
        return True

    async def _still_held(self, digest: Digest) -> bool:
        """Here, on its way, or in the bucket still: asked of the bucket itself,
        not of a size remembered from before a gc (only on a miss here)."""
        if await self._here(digest):
            return True
        size = await self._sizes.ask(digest, lambda: self._store.blob_size(digest), fresh=True)
        return size is not None

    def _bucket(self, digest: Digest) -> BucketSource:
        return BucketSource(self._store, digest, self._slots, self._parts, self._sizes)

    def _from_origin(self, repo: OriginRepo, name: str, digest: Digest) -> Source:
        def publish(fill: FillRun | None) -> None:
            self._through.blob(name, digest, fill)

        origin = OriginSource(repo, digest, self._parts.size, self._sizes, self._metrics, publish)
        if self._fleet is None:
            return origin

        async def linked() -> None:
            await self._links.learned_blob(name, digest)

        blob = self._fleet.blob(repo, digest, name, linked)
        return FleetSource(blob, self._bucket(digest), origin)
