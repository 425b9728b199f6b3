"""This host's fills, one per digest, and the body each reader gets.

`Fills.body` is the one place a reader's body is found, whatever holds the
blob: a small committed blob kept in memory, a committed file, the fill
bringing it in (joined, or started for this reader), or, when the cache has no
room, the source itself, read without caching. Where the bytes of a fill come
from was decided before (the `Source` it is handed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import BinaryIO

from ..disk.eviction import Evictor
from ..disk.store import DiskStore
from ..errors import BlobUnknown
from ..lru import BoundedDict
from ..oci.byterange import RangeRequest
from ..oci.digest import Digest
from ..telemetry.metrics import LookupRecorder, PrefetchRecorder
from .body import BlobBody, DirectBody, FileBody, MemoryBody
from .direct import DirectBlob
from .fill import Fill
from .reading import Reading
from .slots import FairSlots
from .sources import Sizes, Source

__all__ = ["SMALL", "Fills"]

_FILLED_ENTRIES = 100_000  # blobs remembered as filled (a few MB of memory)
# Committed blobs up to SMALL bytes are kept in memory (config blobs, mostly),
# up to _SMALL_MEMO bytes in all.
SMALL = 128 * 1024
_SMALL_MEMO = 32 * 1024 * 1024


class Fills:
    """The fills of this host, at most one per digest, and the bodies readers
    get; see the module docstring. `on_hit` hears of every read of a committed
    blob (the prefetcher counts what it brought for nothing)."""

    def __init__(
        self,
        disk: DiskStore,
        evictor: Evictor,
        reading: Reading,
        slots: FairSlots,
        sizes: Sizes,
        lookup_metrics: LookupRecorder,
        prefetch_metrics: PrefetchRecorder,
        verified_ranges: bool = False,
    ) -> None:
        self._disk = disk
        self._evictor = evictor
        self._reading = reading
        self._slots = slots
        self._sizes = sizes
        self._lookup_metrics = lookup_metrics
        self._prefetch_metrics = prefetch_metrics
        self._verified_ranges = verified_ranges
        self._fills: dict[Digest, Fill] = {}
        self._small: BoundedDict[Digest, MemoryBody] = BoundedDict(_SMALL_MEMO, lambda b: b.size)
        # Blobs this process filled: one filled again crossed the link twice.
        self._filled: BoundedDict[Digest, int] = BoundedDict(_FILLED_ENTRIES)
        self.on_hit: Callable[[Digest], None] = lambda _: None

    async def body(self, source: Source, wanted: RangeRequest | None = None) -> BlobBody:
        """The blob for one reader, ready to read once its size is known; a fill
        started for it begins at the first byte `wanted` names (None: the whole
        blob). Raises BlobUnknown, and the fill's error if it fails before its
        size is known."""
        digest = source.digest
        small = self._small.get(digest)
        if small is not None:
            await self._hit(digest)
            source.served(None)
            return small
        for _ in range(2):  # a file removed under us is looked for once more
            found = await self._committed(digest)
            if found is not None:
                body = await self._committed_body(digest, *found)
                if body is not None:
                    source.served(None)
                    return body
                continue
            fill = await self._fill_for(source, wanted)
            if fill is None:
                return await self._direct(source)
            size = await fill.begun()
            if size is None:
                return await self._direct(source, fill.size)
            self._sizes.learned(digest, size)
            source.served(fill)
            file = _open(fill.path)  # renamed as it committed: look again
            if file is not None:
                return self._file_body(file, size, fill, digest)
        raise BlobUnknown(detail={"digest": str(digest)})

    async def size(self, source: Source) -> int:
        """The blob's size, without reading it. Raises BlobUnknown."""
        found = self._disk.blob(source.digest)
        if found is not None:
            return found[1]
        fill = self.in_flight(source.digest)
        if fill is not None and fill.size is not None:
            return fill.size
        return await source.size()

    async def prefetch(self, source: Source, size: int) -> Fill | None:
        """Start filling a blob of `size` bytes (as a manifest says) that no
        client asked for yet, behind client reads for S3 slots; None when it is
        here or on its way already, or the cache has no room for it."""
        digest = source.digest
        if self.present(digest) or await self._disk.discover(digest):
            return None  # here, on its way, or committed by another process (warm)
        if self.present(digest):
            return None  # a client started its fill while we looked at the disk
        if not self._evictor.could_hold(size) or not await self._evictor.can_cache():
            self._prefetch_metrics.skipped()
            return None
        fill = self._start(source, None, 0)
        fill.background = True  # one read at a time, after client reads for S3 slots
        self._slots.background(fill)
        return fill

    def foreground(self, fill: Fill) -> None:
        """A client waits for all of `fill` now: its reads at full width."""
        fill.background = False
        self._slots.foreground(fill)

    async def peer_body(self, digest: Digest) -> BlobBody | None:
        """What this host has of a blob, committed or still filling, for another
        host of the fleet; None if neither. Starts nothing; raises the fill's
        error if it fails before its size is known."""
        fill = self.in_flight(digest)
        if fill is not None:
            size = await fill.started()
            file = _open(fill.path)
            if file is not None:
                # Another host verifies the blob itself: ranges as this host holds them.
                return FileBody(file, size, fill, self._disk, digest)
        found = self._disk.blob(digest)
        file = None if found is None else _open(found[0])
        if found is None or file is None:
            return None
        return FileBody(file, found[1], None, self._disk, digest)

    def present(self, digest: Digest) -> bool:
        """Committed here or on its way (a quick look at memory, no I/O)."""
        return self._disk.blob(digest) is not None or self.in_flight(digest) is not None

    def in_flight(self, digest: Digest) -> Fill | None:
        """The fill running for a digest, if any."""
        fill = self._fills.get(digest)
        return None if fill is None or fill.failed else fill

    async def settled(self) -> None:
        """Wait until every fill started so far has ended, with what its source
        does after it (tests)."""
        while self._fills:
            await asyncio.wait([f.task for f in self._fills.values()])

    async def close(self) -> None:
        """Stop every fill (shutdown): nothing half-written stays behind."""
        fills = list(self._fills.values())
        for fill in fills:
            fill.task.cancel()
        await asyncio.gather(*(f.task for f in fills), return_exceptions=True)

    # -- inside ----------------------------------------------------------------------

    async def _hit(self, digest: Digest) -> None:
        self.on_hit(digest)
        self._lookup_metrics.hit("blob")
        await self._disk.touch(digest)

    async def _committed(self, digest: Digest) -> tuple[str, int] | None:
        found = self._disk.blob(digest)
        if found is None and await self._disk.discover(digest):
            found = self._disk.blob(digest)  # committed by another process
        return found

    async def _committed_body(self, digest: Digest, path: str, size: int) -> BlobBody | None:
        """A committed blob's body; None when its file went away (prune, another
        process) or changed under us: it is forgotten, to be fetched again."""
        file = _open(path)
        if file is not None:
            await self._hit(digest)
            if size > SMALL:
                return self._file_body(file, size, None, digest)
            with file:  # a quick read of a few bytes from the page cache
                small = MemoryBody(file.read())
            if small.size == size:
                self._small.put(digest, small)
                return small
        self._disk.forget(digest)
        return None

    async def _fill_for(self, source: Source, wanted: RangeRequest | None) -> Fill | None:
        """The fill of the blob, joined or started; None when the cache has no room."""
        fill = self.in_flight(source.digest)
        if fill is not None:
            fill.joiners += 1
            if wanted is None:
                self.foreground(fill)  # a client waits for all of it now, if a prefetch did not
            self._lookup_metrics.blob_miss("join")
            return fill
        if not await self._evictor.can_cache():
            self._lookup_metrics.blob_miss(None)
            return None
        size = self._sizes.known(source.digest)
        first = 0 if wanted is None else wanted.first
        if first is None and size is None:
            size = await source.size()  # a range from the end: the size first
        self._lookup_metrics.blob_miss("fill")
        return self._start(source, size, first or 0)

    def _start(self, source: Source, size: int | None, first: int) -> Fill:
        digest = source.digest
        temp = self._disk.new_temp()
        fill = Fill(digest, source, self._reading, temp, self._disk, self._evictor, size, first)
        self._fills[digest] = fill.start()
        fill.task.add_done_callback(lambda _: self._fill_done(fill))
        return fill

    async def _direct(self, source: Source, size: int | None = None) -> BlobBody:
        """Straight from the source, not cached: the cache has no room."""
        alone = source.alone()
        size = size or self._sizes.known(source.digest) or await alone.size()
        self._lookup_metrics.blob_bypassed()
        direct = DirectBlob(alone, self._reading, source.digest, size)
        return DirectBody(direct, self._verified_ranges)

    def _file_body(self, file: BinaryIO, size: int, fill: Fill | None, digest: Digest) -> BlobBody:
        return FileBody(file, size, fill, self._disk, digest, self._verified_ranges)

    def _fill_done(self, fill: Fill) -> None:
        if self._fills.get(fill.digest) is fill:
            del self._fills[fill.digest]
        if fill.done and fill.size is not None:
            if self._filled.get(fill.digest) is not None:
                self._reading.metrics.repeated(fill.size)  # evicted, or the cache dir wiped
            self._filled.put(fill.digest, fill.size)


def _open(path: object) -> BinaryIO | None:
    """The file open for reading; None if it is gone. Opening is a quick local
    call, made on the loop so that a fill cannot rename its file between our
    look at its path and the open."""
    try:
        return open(str(path), "rb", buffering=0)
    except FileNotFoundError:
        return None
