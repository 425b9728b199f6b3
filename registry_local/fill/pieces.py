"""The reads of one fill: which bytes to read next, and the reads under way.

One S3 stream gives tens of MB/s, far below a host's link, so a fill reads a
large blob as several pieces at once, each a ranged GET written at its offset
in the temp file; `Extents` (extents.py) records what is written. Which bytes
come next is decided here, in this order:

1. bytes a reader waits for (a range of a cold blob: a lazy puller's footer, its
   table of contents, the chunks a container touches) that no read is bringing:
   a read starts right at the first of them, and goes first for an S3 slot
   (slots.py). Bytes a read under way will bring are left to it: GETs never
   overlap, so no byte crosses the link twice (a read cannot be cut short
   without the bytes already on their way being lost);
2. then from the front, the lowest byte nobody holds or reads, as readers of a
   whole blob take bytes in order.

A read ends at the next multiple of the part size (--s3-part-size), or where
the next held or claimed byte begins, so a waiting reader waits at most for
one part to stream. At most `concurrency` front reads run at once, plus
`demand` more for waiting readers, as the source's policy allows (sources.py:
the bucket splits, an origin or another host is read as one stream from the
front, and away from it only once it is known to honour Range). Every read
resumes on its own from the byte it reached (reading.py); a read that fails for
good fails the whole fill. Memory per read is one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..backing.backend import ObjectStream
from ..disk.store import TempBlob
from ..oci.digest import Digest
from .extents import Extents
from .reading import Open, Reading, read_resuming
from .sources import Source

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["NEAR", "Pieces", "hash_range", "write_at"]

MIB = 1 << 20
BATCH = MIB  # bytes a read gathers before writing them, unless a reader waits
NEAR = MIB  # about what one stream brings in a round trip: not worth a read of its own
QUIET = 1.0  # seconds after a reader last asked for a range before the front reads again
# Written bytes between flushes to disk behind the fill: the sync before the
# commit then finds little left (ten 8 MiB fills at once: 150-190 ms before
# their commit with none, about 10 ms with one every 4 MiB).
_FLUSH_STEP = 4 << 20


@dataclass(eq=False)
class _Read:
    """One read under way: bytes [start, position) are written, [position, stop)
    are on their way (stop None: to the blob's end, not known yet)."""

    start: int
    position: int
    stop: int | None
    demand: bool


class Pieces:
    """The reads of one blob into an open temp file; see the module docstring."""

    def __init__(
        self,
        digest: Digest,
        temp: TempBlob,
        source: Source,
        reading: Reading,
        owner: object,
        on_progress: Callable[[], None],
        on_retry: Callable[[], None],
    ) -> None:
        self._digest = digest
        self._temp = temp
        self._source = source
        self._reading = reading
        self._metrics = reading.metrics
        self._owner = owner
        self._on_progress = on_progress
        self._on_retry = on_retry
        self.held = Extents()
        self.size: int | None = None
        self.answered = False  # the source has answered a read: it is there, and up
        self.error: BaseException | None = None
        self.admitted = asyncio.Event()  # writes wait for room in the cache
        self._reads: dict[_Read, asyncio.Task[None]] = {}
        self._demands: dict[int, tuple[int, int]] = {}  # token -> range, in arrival order
        self._tokens = 0
        self._asked_at = -QUIET  # when a reader last asked for a range
        self._resume: asyncio.TimerHandle | None = None  # front reads at full width again
        # Whether a reader of the whole blob waits for bytes from the front now,
        # and whether the fill is a prefetch nobody has asked for yet.
        self.followed: Callable[[], bool] = lambda: False
        self.background: Callable[[], bool] = lambda: False
        self._unflushed = 0

    # -- what the fill asks ------------------------------------------------------------

    def begin(self, first: int) -> None:
        """Start reading: at `first` when the source may be read away from its
        front and `first` is not near it, else at the front. The size comes with
        the first answer."""
        offset = first if self._source.ranged and first > NEAR else 0
        self._launch(offset, self._source.policy.part_end(offset, self.size), demand=offset > 0)

    def want(self, start: int, end: int) -> int:
        """A reader waits for [start, end): read it before anything else. Returns
        a token for `unwant`."""
        self._tokens += 1
        self._demands[self._tokens] = (start, end)
        self._asked_at = time.monotonic()
        self.plan()
        return self._tokens

    def unwant(self, token: int) -> None:
        self._demands.pop(token, None)

    def plan(self) -> None:
        """Start the reads the policy allows, demanded bytes first."""
        if self.size is None or self.error is not None or not self.admitted.is_set():
            return
        while (spec := self._next()) is not None:
            self._launch(*spec)

    async def close(self) -> None:
        """Stop every read still running (the fill is done, one way or another)."""
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        tasks = list(self._reads.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- choosing ----------------------------------------------------------------------

    def _next(self) -> tuple[int, int, bool] | None:
        assert self.size is not None
        policy = self._source.policy
        running = len(self._reads)
        if self._source.ranged and running < policy.concurrency + policy.demand:
            for start, end in self._demands.values():
                offset = self._unclaimed(start, min(end, self.size))
                if offset is not None:
                    return self._carve(offset, end)
        front = sum(not read.demand for read in self._reads)
        if front < self._front_width(policy.concurrency):
            offset = self._unclaimed(0, self.size)
            if offset is not None:
                return self._carve(offset)
        return None

    def _front_width(self, concurrency: int) -> int:
        """How many reads from the front may run now: all the policy allows (one
        for a prefetch nobody has asked for yet), but while readers ask for
        ranges (lazy pullers), none, unless a reader of the whole blob waits for
        the front too: then one. The link, and the host, carry what readers wait
        for first; the front resumes QUIET seconds after the last range."""
        quiet_in = self._asked_at + QUIET - time.monotonic()
        if quiet_in <= 0:
            return 1 if self.background() else concurrency
        if self._resume is None:
            self._resume = asyncio.get_running_loop().call_later(quiet_in, self._resumed)
        return 1 if self.followed() else 0

    def _resumed(self) -> None:
        self._resume = None
        self.plan()

    def _unclaimed(self, start: int, end: int) -> int | None:
        """The first byte of [start, end) that is neither held nor on its way."""
        offset = start
        while offset < end:
            offset = self.held.run_from(offset)
            if offset >= end:
                return None
            read = self._read_at(offset)
            if read is None:
                return offset
            offset = self._stop(read)
        return None

    def _carve(self, offset: int, wanted: int | None = None) -> tuple[int, int, bool]:
        """The read to start at `offset`: to the part's end or the next claimed
        byte, and for bytes a reader waits for (up to `wanted`), no further than
        those: the rest is left free for the next reader's bytes, or the front."""
        assert self.size is not None
        ends = [self._source.policy.part_end(offset, self.size) or self.size]
        if wanted is not None:
            ends.append(wanted)
        ends += [r.start for r in self._reads if r.start > offset]
        claimed = self.held.next_start(offset)
        if claimed is not None:
            ends.append(claimed)
        return offset, min(ends), wanted is not None

    def _read_at(self, offset: int) -> _Read | None:
        for read in self._reads:
            if read.position <= offset < self._stop(read):
                return read
        return None

    def _stop(self, read: _Read) -> int:
        """Where a read ends: its stop, or the blob's end, whichever comes first."""
        end = self.size if self.size is not None else 1 << 62
        return end if read.stop is None else min(read.stop, end)

    # -- reading -----------------------------------------------------------------------

    def _launch(self, start: int, stop: int | None, demand: bool) -> None:
        read = _Read(start, start, stop, demand)
        if demand:
            self._metrics.demand_read()
        self._reads[read] = asyncio.create_task(
            self._read(read), name=f"fill {self._digest} at {start}"
        )

    async def _read(self, read: _Read) -> None:
        try:
            await self._copy(read)
            if read.demand or (self.size is not None and self._source.policy.splits(self.size)):
                self._metrics.part_read()  # a blob read as one stream has no parts
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the fill raises it; the other reads stop
            self._fail(exc)
        finally:
            self._reads.pop(read, None)
        self.plan()

    async def _copy(self, read: _Read) -> None:
        batch: list[bytes] = []
        received = read.position
        async with contextlib.aclosing(
            read_resuming(
                self._source_open(read),
                self._digest,
                self._reading.retry,
                self._on_retry,
                read.start,
                read.stop,
                size=self.size,
                on_size=self._sized,
            )
        ) as chunks:
            async for chunk in chunks:
                # Written in batches: one thread hand-off (and one wake-up of the
                # readers) per BATCH bytes, unless readers wait for these bytes:
                # the read that extends the prefix from the blob's first byte
                # (readers of the whole blob follow it), or a range asked for.
                batch.append(chunk)
                received += len(chunk)
                if (
                    received - read.position < BATCH
                    and received < self._stop(read)
                    and read.position != self.held.run_from(0)
                    and not self._awaited(read.position, received)
                ):
                    continue
                await self._write(read, batch, received)
                batch = []
        if batch:
            await self._write(read, batch, received)

    def _source_open(self, read: _Read) -> Open:
        source, owner = self._source, self._owner

        async def open_(offset: int, end: int | None) -> ObjectStream | None:
            return await source.open(offset, end, owner, read.demand)

        return open_

    async def _write(self, read: _Read, batch: list[bytes], received: int) -> None:
        if not self.admitted.is_set():
            await self.admitted.wait()
        await self._temp.run(write_at, batch, read.position)
        count = received - read.position
        self._metrics.wrote(count)
        self.held.add(read.position, received)
        read.position = received
        self._unflushed += count
        if self._unflushed >= _FLUSH_STEP:
            self._unflushed = 0
            self._temp.flush_behind()
        self._on_progress()

    def _awaited(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self._demands.values())

    def _sized(self, size: int) -> None:
        """A read was answered (the first answer of each read says the size)."""
        if self.size is None or not self.answered:
            self.size = size
            self.answered = True
            self._on_progress()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        current = asyncio.current_task()
        for task in self._reads.values():
            if task is not current:
                task.cancel()
        self._on_progress()


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
