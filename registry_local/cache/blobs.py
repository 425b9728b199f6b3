"""Blobs for readers: each request gets one BlobBody (fill/body.py), whatever is behind it.

BlobCache looks blobs up and attaches readers: a committed file, a small blob
in memory, or the fill bringing it (fill/), started for the first request and
joined by the others. Where a fill reads from is chosen by fill/sources.py:
the bucket, or, for a blob the bucket does not link in a repository an origin
registry serves (origin/mapping.py), the origin (through the fleet when hosts
coordinate), after which it is written through to the bucket
(write_through.py). disk/eviction.py says when the cache has no room: blobs are
then read straight from their source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from io import FileIO

from ..backing.distribution import DistributionStore
from ..disk.eviction import Evictor
from ..disk.store import DiskStore
from ..errors import BlobUnknown
from ..fill.body import BlobBody, DirectBody, FileBody, MemoryBody
from ..fill.direct import DirectBlob
from ..fill.fill import Fill, NoRoom
from ..fill.reading import Reading
from ..fill.sources import Sources
from ..lru import BoundedDict
from ..oci.byterange import RangeRequest
from ..oci.digest import Digest
from ..origin.mapping import OriginMap, OriginRepo
from ..singleflight import SingleFlight
from ..telemetry.metrics import Metrics
from .links import LinkCache, once_linked
from .write_through import WriteThrough

__all__ = ["SMALL", "BlobCache", "CommittedBlob"]

_SIZE_ENTRIES = 100_000
_FILLED_ENTRIES = 100_000  # blobs remembered as filled (a few MB of memory)
# Committed blobs up to SMALL bytes are kept in memory (config blobs, mostly),
# up to _SMALL_MEMO bytes in all.
SMALL = 128 * 1024
_SMALL_MEMO = 32 * 1024 * 1024


def _abandon(fill: Fill | None) -> None:
    if fill is not None:
        fill.abandon()


@dataclass(frozen=True, slots=True)
class CommittedBlob:
    path: str
    size: int


class BlobCache:
    def __init__(
        self,
        store: DistributionStore,
        disk: DiskStore,
        links: LinkCache,
        evictor: Evictor,
        sources: Sources,
        reading: Reading,
        metrics: Metrics,
        origins: OriginMap | None = None,
        verified_ranges: bool = False,
    ) -> None:
        self._origins = origins or OriginMap()
        self._sources = sources
        self._reading = reading
        self._verified_ranges = verified_ranges
        # Blobs a prefetch committed that no client has read yet (for the metric
        # of prefetches wasted by eviction).
        self._unread: set[Digest] = set()
        self._through = WriteThrough(store, disk, links, metrics)
        self._store = store
        self._disk = disk
        self._links = links
        self._evictor = evictor
        self._metrics = metrics
        self._fills: dict[Digest, Fill] = {}
        self._small: BoundedDict[Digest, MemoryBody] = BoundedDict(_SMALL_MEMO, lambda b: b.size)
        self._sizes: BoundedDict[Digest, int] = BoundedDict(_SIZE_ENTRIES)
        # Blobs this process filled: one filled again crossed the link twice.
        self._filled: BoundedDict[Digest, int] = BoundedDict(_FILLED_ENTRIES)
        self._stats: SingleFlight[Digest, int | None] = SingleFlight()

    async def _require_link(
        self, name: str, digest: Digest, namespace: str | None = None
    ) -> OriginRepo | None:
        """None if the bucket links the blob into the repository; else the origin
        to fetch it from. Raises BlobUnknown when there is neither."""
        if await self._links.blob_linked(name, digest):
            return None
        repo = self._origins.repo_for(name, namespace)
        if repo is None:
            raise BlobUnknown(detail={"digest": str(digest)})
        return repo

    async def open(
        self,
        name: str,
        digest: Digest,
        namespace: str | None = None,
        wanted: RangeRequest | None = None,
    ) -> BlobBody:
        """The blob, ready to read once its size is known. Raises BlobUnknown;
        `namespace` is the registry containerd names with ?ns=; `wanted`, the
        ranges the reader asks for (None: the whole blob): a fill started for
        it begins to read at the first of them."""
        repo = self._origins.repo_for(name, namespace)
        # Known here (the warm path: nothing to check), or linked in the bucket.
        if self._links.known_blob(name, digest) or (
            repo is not None and await self._links.blob_linked(name, digest)
        ):
            try:
                return await self._from_bucket(digest, wanted)
            except BlobUnknown:
                if repo is None:
                    raise
                # Gone from the bucket since it was learned (gc removed what
                # nobody used): the origin has it.
                await self._links.forget_blob(name, digest)
        if repo is not None:
            return await self._from_origin(repo, name, digest, wanted)
        # The link check and the first read of the blob run together: a cold
        # request costs one round trip to the bucket, not two. Nothing is handed
        # out before the link is confirmed; what an unlinked request started is
        # dropped (a fill only it wanted is cancelled).
        return await once_linked(
            self._links.blob_linked(name, digest),
            self._from_bucket(digest, wanted),
            lambda: BlobUnknown(detail={"digest": str(digest)}),
            lambda body: body.abandon(),
        )

    async def _from_bucket(self, digest: Digest, wanted: RangeRequest | None = None) -> BlobBody:
        small = self._small.get(digest)
        if small is not None:
            self._unread.discard(digest)
            self._metrics.cache_hit("blob")
            await self._disk.touch(digest)
            return small
        for _ in range(2):
            try:
                found, file = await self._opened(digest, lambda: self.source(digest, wanted=wanted))
            except NoRoom as exc:
                return await self._bypass(digest, exc.size)
            if isinstance(found, Fill):
                return self._body(file, await found.started(), found, digest)
            await self._disk.touch(digest)
            if found.size > SMALL:
                return self._body(file, found.size, None, digest)
            with file:  # a quick read of a few bytes from the page cache
                small = MemoryBody(file.readall())
            if small.size == found.size:
                self._small.put(digest, small)
                return small
            self._disk.forget(digest)  # the file changed under us: fetch it again
        raise BlobUnknown(detail={"digest": str(digest)})

    async def _from_origin(
        self, repo: OriginRepo, name: str, digest: Digest, wanted: RangeRequest | None = None
    ) -> BlobBody:
        try:
            found, file = await self._opened(
                digest, lambda: self.source(digest, repo, name, wanted)
            )
        except NoRoom as exc:
            return await self._bypass(digest, exc.size, repo)
        if isinstance(found, Fill):
            fill, size = found, await found.started()
        else:
            fill, size = None, found.size
        self._through.blob(name, digest, fill)
        return self._body(file, size, fill, digest)

    def _body(self, file: FileIO, size: int, fill: Fill | None, digest: Digest) -> FileBody:
        return FileBody(file, size, fill, self._disk, digest, self._verified_ranges)

    async def _opened(
        self, digest: Digest, find: Callable[[], Awaitable[CommittedBlob | Fill | None]]
    ) -> tuple[CommittedBlob | Fill, FileIO]:
        """What `find` gives for the blob (a committed file, or its fill), with
        its file open. A file removed under us (prune, another process, a fill
        renaming it as it commits) is looked for once more. Raises what `find`
        raises, and BlobUnknown when it finds nothing."""
        for _ in range(2):
            found = await find()
            if found is None:
                break
            try:
                # Opening is a quick local call, made on the loop so that a fill
                # cannot rename its file between our look at its path and the open.
                return found, open(found.path, "rb", buffering=0)  # noqa: ASYNC230
            except FileNotFoundError:
                if not isinstance(found, Fill):
                    self._disk.forget(digest)
        raise BlobUnknown(detail={"digest": str(digest)})

    async def source(
        self,
        digest: Digest,
        repo: OriginRepo | None = None,
        name: str = "",
        wanted: RangeRequest | None = None,
    ) -> CommittedBlob | Fill:
        """A committed blob, or the fill bringing it in (started if needed) from
        the bucket or from `repo`'s origin for the repository `name`, reading
        first the first byte `wanted` names (a range counted from the end needs
        the size first). Raises NoRoom when the cache cannot take it."""
        committed = self._committed(digest)
        if committed is None and await self._disk.discover(digest):
            committed = self._committed(digest)  # committed by another process
        if committed is not None:
            self._unread.discard(digest)
            self._metrics.cache_hit("blob")
            return committed
        fill = self._fills.get(digest)
        if fill is None or fill.failed:
            if not await self._evictor.can_cache():
                self._metrics.blob_miss(None)
                raise NoRoom(str(digest), None)
            size = self._sizes.get(digest)
            first = 0 if wanted is None else wanted.first
            if first is None and size is None:
                size = await self._stat(digest, repo)  # a range from the end: the size first
            self._metrics.blob_miss("fill")
            fill = self._start(digest, repo, name, size, first or 0)
        else:
            fill.joiners += 1
            if wanted is None:
                self._foreground(fill)  # a client waits for all of it now, if a prefetch did not
            self._metrics.blob_miss("join")
        size = await fill.started()
        self._sizes.put(digest, size)
        return fill

    async def _bypass(
        self, digest: Digest, size: int | None, repo: OriginRepo | None = None
    ) -> BlobBody:
        if size is None:
            size = await self._stat(digest, repo)
        self._metrics.blob_bypassed()
        source = self._sources.choose(digest, repo, alone=True).source
        return DirectBody(DirectBlob(source, self._reading, digest, size), self._verified_ranges)

    def _start(
        self,
        digest: Digest,
        repo: OriginRepo | None = None,
        name: str = "",
        size: int | None = None,
        first: int = 0,
    ) -> Fill:
        choice = self._sources.choose(digest, repo)
        fill = Fill(digest, choice.source, self._reading, self._disk, self._evictor, size, first)
        if choice.lease is not None:
            # The fleet decides on the first read: this host reads the origin, or
            # follows the host that does. Its write-through, started with the
            # fill, lets go of the lease when it ends, whatever the fill's end.
            choice.lease.attach(fill)
            self._through.blob(name, digest, fill, choice.lease)
        self._fills[digest] = fill
        fill.task.add_done_callback(lambda _: self._fill_done(fill))
        return fill

    async def settled(self) -> None:
        """Wait until blobs fetched from an origin are written through (tests)."""
        await self._through.settled()

    async def prefetch(
        self, name: str, digest: Digest, size: int, namespace: str | None
    ) -> Fill | None:
        """Start filling a blob of `size` bytes (as the manifest says) that no
        client asked for yet, behind client reads for S3 slots; None when it is
        here or on its way already, or the cache has no room for it. Raises
        BlobUnknown when the repository does not link it."""
        if self._links.known_blob(name, digest) or self._origins.repo_for(name, namespace):
            repo = await self._require_link(name, digest, namespace)
            return await self._prefetch(name, digest, size, repo)
        # As in `open`: the link check runs while the fill starts, and a fill
        # started for an unlinked blob is dropped unless a client joined it.
        return await once_linked(
            self._links.blob_linked(name, digest),
            self._prefetch(name, digest, size, None),
            lambda: BlobUnknown(detail={"digest": str(digest)}),
            _abandon,
        )

    async def _prefetch(
        self, name: str, digest: Digest, size: int, repo: OriginRepo | None
    ) -> Fill | None:
        if self.present(digest) or await self._disk.discover(digest):
            return None  # here, on its way, or committed by another process (warm)
        if self.present(digest):
            return None  # a client started its fill while we looked at the disk
        if not self._evictor.could_hold(size) or not await self._evictor.can_cache():
            self._metrics.prefetch_skipped()
            return None
        fill = self._start(digest, repo, name)
        fill.background = True  # one read at a time, after client reads for S3 slots
        self._sources.slots.background(fill)
        self._metrics.prefetch_started()
        fill.task.add_done_callback(lambda _: self._prefetch_done(fill))
        return fill

    def _foreground(self, fill: Fill) -> None:
        fill.background = False
        self._sources.slots.foreground(fill)

    def _prefetch_done(self, fill: Fill) -> None:
        self._foreground(fill)
        if not fill.task.cancelled() and not fill.failed and fill.size is not None:
            self._metrics.prefetch_committed(fill.size)
            if not fill.joiners:
                self._unread.add(fill.digest)

    def evicted(self, digest: Digest) -> None:
        """The evictor removed a blob: count it if a prefetch brought it for nothing."""
        if digest in self._unread:
            self._unread.discard(digest)
            self._metrics.prefetch_evicted()

    async def peer_body(self, digest: Digest) -> BlobBody | None:
        """What this host has of a blob, committed or still filling, for another
        host of the fleet; None if neither. Starts nothing; raises the fill's
        error if it fails before its size is known."""

        async def here() -> CommittedBlob | Fill | None:
            fill = self.in_flight(digest)
            if fill is not None:
                await fill.started()
                return fill
            return self._committed(digest)

        try:
            source, file = await self._opened(digest, here)
        except BlobUnknown:
            return None
        if isinstance(source, Fill):
            # Another host verifies the blob itself: ranges as this host holds them.
            return FileBody(file, await source.started(), source, self._disk, digest)
        return FileBody(file, source.size, None, self._disk, digest)

    def present(self, digest: Digest) -> bool:
        """Committed here or on its way (a quick look at memory, no I/O)."""
        return self._committed(digest) is not None or self.in_flight(digest) is not None

    def in_flight(self, digest: Digest) -> Fill | None:
        """The fill running for a digest, if any (await its `task` to follow it)."""
        fill = self._fills.get(digest)
        return None if fill is None or fill.failed else fill

    def _committed(self, digest: Digest) -> CommittedBlob | None:
        found = self._disk.blob(digest)
        return None if found is None else CommittedBlob(*found)

    def _fill_done(self, fill: Fill) -> None:
        if self._fills.get(fill.digest) is fill:
            del self._fills[fill.digest]
        if fill.done and fill.size is not None:
            if self._filled.get(fill.digest) is not None:
                self._metrics.fill_repeated(fill.size)  # evicted, or the cache dir wiped
            self._filled.put(fill.digest, fill.size)

    async def size(self, name: str, digest: Digest, namespace: str | None = None) -> int:
        """The blob's size, without fetching it. Raises BlobUnknown."""
        repo = await self._require_link(name, digest, namespace)
        committed = self._committed(digest)
        if committed is not None:
            return committed.size
        fill = self._fills.get(digest)
        if fill is not None and fill.size is not None:
            return fill.size
        return await self._stat(digest, repo)

    async def _stat(self, digest: Digest, repo: OriginRepo | None = None) -> int:
        size = self._sizes.get(digest)
        if size is None:
            if repo is not None:
                size = await repo.origin.blob_size(repo.remote, digest)
            else:
                size = await self._stats.run(digest, lambda: self._store.blob_size(digest))
            if size is None:
                raise BlobUnknown(detail={"digest": str(digest)})
            self._sizes.put(digest, size)
        return size

    async def close(self) -> None:
        """Stop every fill (shutdown): nothing half-written stays behind."""
        fills = list(self._fills.values())
        for fill in fills:
            fill.task.cancel()
        await asyncio.gather(*(f.task for f in fills), return_exceptions=True)
        await self._through.close()
        await self._stats.close()
