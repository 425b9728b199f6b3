"""Where a fill's bytes come from: chosen once per fill, before any read is made.

    Source                  how a fill reads one blob: open(offset, end, owner, urgent)
    ├── BucketSource        the bucket; each read holds one of the shared S3 slots
    │                       (slots.py) while its body streams, and only then
    ├── OriginSource        an origin registry's repository (--upstream): one read at
    │                       a time from the front, and reads away from it once the
    │                       origin is known to honour Range
    └── FleetSource         through the fleet (fleet/coordination.py): this host reads
                            the origin, or follows the host that does

`Sources.choose` is the one place that picks among them; what it chose comes
with the fleet's lease on the blob, if any, for whoever writes it through. A source also says how
its reads may be split (`PartPolicy`): the bucket is read as parts of
--s3-part-size, several at once; an origin or another host as one stream from
the front, so one pull never looks like a swarm to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..backing.backend import ObjectStream
from ..backing.distribution import DistributionStore
from ..fleet.coordination import Fleet, FleetBlob
from ..oci.digest import Digest
from ..origin.mapping import OriginRepo
from ..telemetry.metrics import Metrics
from .slots import FairSlots

__all__ = [
    "ONE_STREAM",
    "BucketSource",
    "Choice",
    "FleetSource",
    "OriginSource",
    "PartPolicy",
    "Source",
    "Sources",
]

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
    """Where one fill reads its blob."""

    @property
    def policy(self) -> PartPolicy:
        """How its reads may be split."""

    @property
    def ranged(self) -> bool:
        """Whether bytes away from the front may be read on their own (for a
        reader waiting for them); False until known."""

    async def open(
        self, offset: int, end: int | None, owner: object, urgent: bool
    ) -> ObjectStream | None:
        """Bytes [offset, end) of the blob, or None if the source has no such
        blob. `owner` shares S3 slots fairly; `urgent`: a reader waits for these
        bytes now. Raises BackendUnavailable (worth a retry) or BackendError."""


class BucketSource:
    """The blob in the bucket; reads hold an S3 slot from open to close."""

    def __init__(
        self, store: DistributionStore, digest: Digest, slots: FairSlots, policy: PartPolicy
    ) -> None:
        self._store = store
        self._digest = digest
        self._slots = slots
        self.policy = policy

    @property
    def ranged(self) -> bool:
        return True

    async def open(
        self, offset: int, end: int | None, owner: object, urgent: bool
    ) -> ObjectStream | None:
        return await self.open_key(
            self._store.layout.blob_data(self._digest), offset, end, owner, urgent
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
    for beyond the front part can be read on its own."""

    def __init__(self, repo: OriginRepo, digest: Digest, part_size: int, metrics: Metrics) -> None:
        self._repo = repo
        self._digest = digest
        self._parts = PartPolicy(size=part_size, concurrency=1)
        self._metrics = metrics
        self._counted = False

    @property
    def ranged(self) -> bool:
        return self._repo.origin.honours_ranges is True

    @property
    def policy(self) -> PartPolicy:
        return self._parts if self.ranged else ONE_STREAM

    async def open(
        self, offset: int, end: int | None, owner: object, urgent: bool
    ) -> ObjectStream | None:
        stream = await self._repo.open_blob(self._digest, offset, end)
        if self._repo.origin.honours_ranges is False and not self._counted:
            self._counted = True  # this fill reads it in order only
            self._metrics.origin_range_ignored()
        return stream


class FleetSource:
    """The blob as the fleet has it: from the origin as the lease holder, else
    from the holder's fill or the bucket; one stream from the front."""

    policy = ONE_STREAM

    def __init__(self, blob: FleetBlob, bucket: BucketSource) -> None:
        self.blob = blob
        self._bucket = bucket

    @property
    def ranged(self) -> bool:
        return False

    async def open(
        self, offset: int, end: int | None, owner: object, urgent: bool
    ) -> ObjectStream | None:
        async def open_key(key: str, start: int, stop: int | None) -> ObjectStream | None:
            return await self._bucket.open_key(key, start, stop, owner, urgent)

        return await self.blob.open_blob(offset, end, open_key)


@dataclass(frozen=True)
class Choice:
    """Where a fill reads, and the fleet's lease on the blob when the fleet
    coordinates it (released once the blob is written through)."""

    source: Source
    lease: FleetBlob | None = None


class Sources:
    """The choice of where a fill reads, for every fill of this host."""

    def __init__(
        self,
        store: DistributionStore,
        slots: FairSlots,
        parts: PartPolicy,
        metrics: Metrics,
        fleet: Fleet | None = None,
    ) -> None:
        self._store = store
        self.slots = slots  # shared by every read of the bucket
        self._parts = parts
        self._metrics = metrics
        self._fleet = fleet

    @property
    def coordinated(self) -> bool:
        """Whether origin reads are coordinated with the other hosts of the bucket."""
        return self._fleet is not None

    def bucket(self, digest: Digest) -> BucketSource:
        return BucketSource(self._store, digest, self.slots, self._parts)

    def choose(self, digest: Digest, repo: OriginRepo | None, alone: bool = False) -> Choice:
        """The bucket, when it is to have the blob (`repo` None); else the origin,
        through the fleet unless this host reads it `alone` (without caching)."""
        if repo is None:
            return Choice(self.bucket(digest))
        if self._fleet is not None and not alone:
            blob = self._fleet.blob(repo, digest)  # it counts its own reads of the origin
            return Choice(FleetSource(blob, self.bucket(digest)), blob)
        if not alone:
            self._metrics.origin_fetched("blob")
        return Choice(OriginSource(repo, digest, self._parts.size, self._metrics))
