"""Ranged fills: a large blob read from the backing store as several parts at once.

One S3 stream gives tens of MB/s, far below a host's link, so the fill of a
blob larger than one part reads parts [k * size, (k + 1) * size) concurrently and
writes each at its offset in the temp file. The fill reads part 0 itself (the
ranged GET that also tells it the blob's size), hashing as it writes, exactly
like a one-stream fill; `Parts` fetches parts 1.. in the background and reports
the contiguous prefix as it grows. The fill hashes that prefix as it grows from
the page cache and only then lets readers have it, so readers get bytes
strictly in order and verifying the digest costs no second read of the blob.

A fill has at most `concurrency` reads open at once (part 0 included), and each
holds one of the shared S3 slots with the fill as its owner, so concurrent fills
share the slots in turn (slots.py). Every part resumes on its own from the byte
it reached (reading.py), so S3 sends each byte once plus retried bytes only; a
part that fails for good fails the whole fill. Memory per part is one chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..disk.store import TempBlob
from ..oci.digest import Digest
from ..telemetry.metrics import Metrics
from .reading import BlobSource, RetryPolicy, read_resuming
from .slots import FairSlots

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["PartPolicy", "Parts", "Reads", "hash_range", "write_at"]

MIB = 1 << 20
BATCH = MIB  # bytes a part gathers before writing them


@dataclass(frozen=True)
class PartPolicy:
    """How a fill splits a large blob: parts of `size` bytes (0: one stream for
    the whole blob), at most `concurrency` read at once."""

    size: int
    concurrency: int

    @property
    def first_end(self) -> int | None:
        """Where the fill's first read stops: the end of part 0, or None (all)."""
        return self.size or None

    def splits(self, size: int) -> bool:
        return 0 < self.size < size


@dataclass(frozen=True)
class Reads:
    """How fills read blobs: from which source, retried how, in turn on which
    shared S3 slots, split into which parts, counted in which metrics."""

    source: BlobSource
    retry: RetryPolicy
    slots: FairSlots
    parts: PartPolicy
    metrics: Metrics

    def from_(self, source: BlobSource, parts: PartPolicy) -> Reads:
        """The same, from another source (an origin registry) split otherwise."""
        return replace(self, source=source, parts=parts)

    def chunks(
        self,
        digest: Digest,
        on_size: Callable[[int], None] | None,
        on_retry: Callable[[], None],
        start: int = 0,
        end: int | None = None,
        owner: object = None,
        size: int | None = None,
    ) -> contextlib.aclosing[AsyncGenerator[bytes, None]]:
        """`async with` it for the bytes [start, end) of a blob, read as
        reading.read_resuming reads them; leaving the block, however early,
        closes what the read holds open."""
        return contextlib.aclosing(
            read_resuming(
                self.source,
                digest,
                self.retry,
                self.slots,
                on_size,
                on_retry,
                start,
                end,
                owner,
                size,
            )
        )


class Parts:
    """Parts 1.. of one blob, fetched into an open file while the fill reads part 0."""

    def __init__(
        self,
        digest: Digest,
        size: int,
        temp: TempBlob,
        reads: Reads,
        on_retry: Callable[[], None],
        owner: object,
    ) -> None:
        self._digest = digest
        self._size = size
        self._temp = temp
        self._part = reads.parts.size
        self._reads = reads
        self._metrics = reads.metrics
        self._on_retry = on_retry
        self._owner = owner
        self._count = -(-size // self._part)
        self._done = [0] * self._count  # bytes written, per part
        self._frontier = 1  # the first part not yet whole (part 0 is the fill's)
        self._next = 1  # the next part a worker takes
        self._error: BaseException | None = None
        self._progress = asyncio.Event()
        # Part 0 is being read: one read fewer until the fill says it is done.
        workers = min(reads.parts.concurrency - 1, self._count - 1)
        self._workers = [self._spawn() for _ in range(workers)]

    @property
    def contiguous(self) -> int:
        """Bytes from the blob's start written without a gap (part 0 counts as
        whole: the fill asks only once it has read it)."""
        if self._frontier >= self._count:
            return self._size
        return self._frontier * self._part + self._done[self._frontier]

    def first_done(self) -> None:
        """The fill has read part 0: its read goes to the remaining parts."""
        if self._next < self._count and self._error is None:
            self._workers.append(self._spawn())

    def check(self) -> None:
        """Raise the error a part failed with, if any."""
        if self._error is not None:
            raise self._error

    async def beyond(self, offset: int) -> int:
        """Wait until more than `offset` bytes are contiguous; raises a part's error."""
        while True:
            self.check()
            if self.contiguous > offset:
                return self.contiguous
            await self._progress.wait()

    async def close(self) -> None:
        """Stop every part still running (the fill is done, one way or another)."""
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def _spawn(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._work(), name=f"fill {self._digest} parts")

    def _notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def _work(self) -> None:
        try:
            while self._next < self._count:
                index = self._next
                self._next += 1
                await self._fetch(index)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the fill raises it; the other parts stop
            if self._error is None:
                self._error = exc
            current = asyncio.current_task()
            for worker in self._workers:
                if worker is not current:
                    worker.cancel()
            self._notify()

    async def _fetch(self, index: int) -> None:
        start = index * self._part
        end = min(start + self._part, self._size)
        position = received = start
        batch: list[bytes] = []
        async with self._reads.chunks(
            self._digest, None, self._on_retry, start, end, self._owner, self._size
        ) as chunks:
            async for chunk in chunks:
                # Written in batches: one thread hand-off (and one wake-up of the
                # fill) per BATCH bytes, not per network chunk.
                batch.append(chunk)
                received += len(chunk)
                if received - position < BATCH and received < end:
                    continue
                await self._temp.run(write_at, batch, position)
                self._metrics.fill_wrote(received - position)
                position, batch = received, []
                self._done[index] = position - start
                if index == self._frontier:
                    self._advance()
                    self._notify()
        self._metrics.fill_part_read()

    def _advance(self) -> None:
        while self._frontier < self._count and self._done[self._frontier] == self._length(
            self._frontier
        ):
            self._frontier += 1

    def _length(self, index: int) -> int:
        return min(self._part, self._size - index * self._part)



def write_at(fd: int, data: bytes | list[bytes], offset: int) -> None:
    """Write all of `data` (one buffer or several, in order) at `offset`; runs
    in a thread."""
    for buffer in [data] if isinstance(data, bytes) else data:
        view = memoryview(buffer)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written


def hash_range(fd: int, hasher: _Hash, start: int, end: int) -> None:
    """Feed bytes [start, end) of the file to the hasher; runs in a thread. The
    bytes were just written, so they are in the page cache: mapped, not copied."""
    base = start - start % mmap.ALLOCATIONGRANULARITY
    with (
        mmap.mmap(fd, end - base, prot=mmap.PROT_READ, offset=base) as mapped,
        memoryview(mapped) as view,
        view[start - base :] as wanted,
    ):
        hasher.update(wanted)
