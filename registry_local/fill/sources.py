"""Where a fill's bytes come from: one Source per blob, decided once
(cache/sources.py decides which), before any read is made.

    Source                  one blob: size, open(offset, end, owner, urgent),
    │                       filling (around the fill's life), served, alone
    ├── BucketSource        the bucket; each read holds one of the shared S3 slots
    │                       (slots.py) while its body streams, and only then
    ├── OriginSource        an origin registry's repository (--upstream): one read at
    │                       a time from the front, and reads away from it once the
    │                       origin is known to honour Range
    └── FleetSource         through the fleet (fleet/blob.py): this host reads the
                            origin, or follows the host that does; the fleet's
                            lease is held around the fill (`filling`)

A source also says how its reads may be split (`PartPolicy`): the bucket is read
as parts of --s3-part-size, several at once; an origin or another host as one
stream from the front, so one pull never looks like a swarm to them. What comes
from an origin is written through to the bucket for each repository a request
named it in (`served`: the cache's publisher does it once the fill has ended).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..backing.backend import ObjectStream
from ..backing.distribution import DistributionStore
from ..errors import BlobUnknown
from ..fleet.blob import FleetBlob
from ..fleet.stager import HeldFile
from ..lru import BoundedDict
from ..oci.digest import Digest
from ..origin.mapping import OriginRepo
from ..singleflight import SingleFlight
from ..telemetry.metrics import OriginRecorder
from .slots import FairSlots

__all__ = [
    "ONE_STREAM",
    "BucketSource",
    "FillRun",
    "FleetSource",
    "OriginSource",
    "PartPolicy",
    "Publish",
    "Sizes",
    "Source",
]

_SIZE_ENTRIES = 100_000


class FillRun(HeldFile, Protocol):
    """What a source sees of the fill that reads it."""

    async def ended(self) -> None:
        """Wait until the fill has ended, with its source's work after it."""


# Write a blob from an origin through to the bucket for a request's repository,
# once `fill` (None: committed already) has ended.
Publish = Callable[[FillRun | None], None]


class Sizes:
    """Blob sizes this host has learned, and one question at a time per blob
    for the rest."""

    def __init__(self) -> None:
        self._known: BoundedDict[Digest, int] = BoundedDict(_SIZE_ENTRIES)
        self._flights: SingleFlight[Digest, int | None] = SingleFlight()

    def known(self, digest: Digest) -> int | None:
        return self._known.get(digest)

    def learned(self, digest: Digest, size: int) -> None:
        self._known.put(digest, size)

    async def ask(
        self, digest: Digest, ask: Callable[[], Awaitable[int | None]], fresh: bool = False
    ) -> int | None:
        """The size, from memory or `ask()` (one question at a time per blob);
        with `fresh`, asked again (the object may be gone since)."""
        size = None if fresh else self._known.get(digest)
        if size is None:
            size = await self._flights.run(digest, ask)
            if size is not None:
                self._known.put(digest, size)
        return size

    async def close(self) -> None:
        await self._flights.close()


# Reads a fill may make beyond its policy's, for bytes a reader waits for.
DEMAND_READS = 4


@dataclass(frozen=True)
class PartPolicy:
    """How a fill reads a blob: from the front, at most `concurrency` reads at
    once, each up to the next multiple of `size` (0: to wherever the next read
    starts, or the end), plus up to `demand` reads for ranges readers wait for."""

    size: int
    concurrency: int
    demand: int = DEMAND_READS

    def splits(self, size: int) -> bool:
        """Whether a blob of `size` bytes is read as more than one part."""
        return 0 < self.size < size

    def part_end(self, offset: int, size: int | None) -> int | None:
        """Where a read starting at `offset` stops at the latest (None: the end)."""
        if self.size <= 0:
            return size
        end = (offset // self.size + 1) * self.size
        return end if size is None else min(end, size)


ONE_STREAM = PartPolicy(size=0, concurrency=1)


class Source(Protocol):
    """Where one fill reads its blob, and what is done around it."""

    @property
    def digest(self) -> Digest:
        """The blob."""

    @property
    def policy(self) -> PartPolicy:
        """How its reads may be split."""

    @property
    def ranged(self) -> bool:
        """Whether bytes away from the front may be read on their own (for a
        reader waiting for them); False until known."""

    async def size(self) -> int:
        """The blob's size, without reading it. Raises BlobUnknown, BackendError."""

    async def open(
        self, offset: int, end: int | None, owner: object, urgent: bool
    ) -> ObjectStream | None:
        """Bytes [offset, end) of the blob, or None if the source has no such
        blob. `owner` shares S3 slots fairly; `urgent`: a reader waits for these
        bytes now. Raises BackendUnavailable (worth a retry) or BackendError."""

    def filling(self, fill: HeldFile) -> contextlib.AbstractAsyncContextManager[None]:
        """Entered by `fill` around its whole life (the fleet's lease)."""

    def served(self, fill: FillRun | None) -> None:
        """A request is served this blob, from `fill` (None: committed here)."""

    def alone(self) -> Source:
        """The same bytes, read by this host alone and not cached (no room)."""


@contextlib.asynccontextmanager
async def _nothing_around(_: HeldFile) -> AsyncIterator[None]:
    yield


class BucketSource:
    """The blob in the bucket; reads hold an S3 slot from open to close."""

    filling = staticmethod(_nothing_around)

    def __init__(
        self,
        store: DistributionStore,
        digest: Digest,
        slots: FairSlots,
        policy: PartPolicy,
        sizes: Sizes,
    ) -> None:
        self._store = store
        self.digest = digest
        self._slots = slots
        self.policy = policy
        self._sizes = sizes

    @property
    def ranged(self) -> bool:
        return True

    async def size(self) -> int:
        size = await self._sizes.ask(self.digest, lambda: self._store.blob_size(self.digest))
        if size is None:
            raise BlobUnknown(detail={"digest": str(self.digest)})
        return size

    def served(self, fill: FillRun | None) -> None:
        pass  # linked in the bucket already

    def alone(self) -> Source:
        return self

    async def open(
        self, offset: int, end: int | None, owner: object, urgent: bool
    ) -> ObjectStream | None:
        return await self.open_key(
            self._store.layout.blob_data(self.digest), offset, end, owner, urgent
        )

    async def open_key(
        self, key: str, offset: int, end: int | None, owner: object, urgent: bool
    ) -> ObjectStream | None:
        """Bytes [offset, end) of any object of the bucket (the fleet's staged
        parts too), holding a slot while they stream."""
        await self._slots.acquire(owner, urgent)
        try:
            stream = await self._store.backend.open(key, offset, end)
        except BaseException:
            self._slots.release()
            raise
        if stream is None:
            self._slots.release()
            return None
        return _Slotted(stream, self._slots)


class _Slotted:
    """A read of the bucket that gives its S3 slot back when it is closed."""

    def __init__(self, stream: ObjectStream, slots: FairSlots) -> None:
        self._stream = stream
        self._slots: FairSlots | None = slots

    @property
    def size(self) -> int:
        return self._stream.size

    async def read(self, n: int) -> bytes:
        return await self._stream.read(n)

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            if self._slots is not None:
                self._slots.release()
                self._slots = None


class OriginSource:
    """The blob at an origin registry, read by this host alone: one read at a
    time from the front. Until the origin is known to honour Range, that read
    runs to the end (an origin that ignores Range sends the whole blob to every
    GET); once it is, reads stop at each part's end, so a range a reader waits
    for beyond the front part can be read on its own. `publish` writes it
    through for each request served; None: nothing to write (a read without
    caching)."""

    def __init__(
        self,
        repo: OriginRepo,
        digest: Digest,
        part_size: int,
        sizes: Sizes,
        metrics: OriginRecorder,
        publish: Publish | None,
    ) -> None:
        self._repo = repo
        self.digest = digest
        self._parts = PartPolicy(size=part_size, concurrency=1)
        self._sizes = sizes
        self._metrics = metrics
        self._publish = publish
        self._counted = False

    @property
    def ranged(self) -> bool:
        return self._repo.origin.honours_ranges is True

    @property
    def policy(self) -> PartPolicy:
        return self._parts if self.ranged else ONE_STREAM

    async def size(self) -> int:
        repo = self._repo
        size = await self._sizes.ask(
            self.digest, lambda: repo.origin.blob_size(repo.remote, self.digest)
        )
        if size is None:
            raise BlobUnknown(detail={"digest": str(self.digest)})
        return size

    async def open(
        self, offset: int, end: int | None, owner: object, urgent: bool
    ) -> ObjectStream | None:
        stream = await self._repo.open_blob(self.digest, offset, end)
        if self._repo.origin.honours_ranges is False and not self._counted:
            self._counted = True  # this fill reads it in order only
            self._metrics.range_ignored()
        return stream

    @contextlib.asynccontextmanager
    async def filling(self, fill: HeldFile) -> AsyncIterator[None]:
        self._metrics.fetched("blob")  # one read of the origin per fill
        yield

    def served(self, fill: FillRun | None) -> None:
        if self._publish is not None:
            self._publish(fill)

    def alone(self) -> Source:
        return OriginSource(
            self._repo, self.digest, self._parts.size, self._sizes, self._metrics, None
        )


class FleetSource:
    """The blob as the fleet has it: from the origin as the lease holder, else
    from the holder's fill or the bucket; one stream from the front. The fill
    holds the fleet's lease on the blob around its life (`filling`)."""

    policy = ONE_STREAM

    def __init__(self, blob: FleetBlob, bucket: BucketSource, origin: OriginSource) -> None:
        self._blob = blob
        self._bucket = bucket
        self._origin = origin
        self.digest = origin.digest

    @property
    def ranged(self) -> bool:
        return False

    async def size(self) -> int:
        return await self._origin.size()

    async def open(
        self, offset: int, end: int | None, owner: object, urgent: bool
    ) -> ObjectStream | None:
        async def open_key(key: str, start: int, stop: int | None) -> ObjectStream | None:
            return await self._bucket.open_key(key, start, stop, owner, urgent)

        return await self._blob.open_blob(offset, end, open_key)

    def filling(self, fill: HeldFile) -> contextlib.AbstractAsyncContextManager[None]:
        return self._blob.filling(fill)

    def served(self, fill: FillRun | None) -> None:
        self._origin.served(fill)

    def alone(self) -> Source:
        return self._origin.alone()
