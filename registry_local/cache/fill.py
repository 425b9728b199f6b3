"""A fill: one blob copied from the backing store into the cache, as a task of its own.

The fill streams the object into a temp file, hashing as it writes; a blob
larger than one part is read as several ranged parts at once (parts.py) and
hashed as their contiguous prefix grows. Readers (the request that started it
and every request that joined) follow the hashed prefix of the growing file and
are woken as it grows, so they get bytes as soon as the fill has them, in order.
The last byte is held back until the digest is verified: a corrupt blob is never
served whole, so a client always sees a short body rather than wrong content.

Reads that break resume from the byte reached (reading.py). A digest mismatch, a
backing store that keeps failing, or a shutdown ends the fill with an error;
nothing is committed and every reader is released with that error. If the
cache has no room for the blob, the fill ends with NoRoom before any byte is
written, and its readers stream from the backing store instead (direct.py).
The task never depends on any reader staying connected.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..disk.eviction import Evictor
from ..disk.store import DiskStore, TempBlob
from ..errors import BackendError, BlobUnknown, DigestMismatch, FillFailed
from ..oci.digest import Digest
from ..telemetry.metrics import FillOutcome
from .direct import DirectBlob
from .parts import Parts, Reads, hash_range, write_at

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["Fill", "NoRoom"]

log = logging.getLogger(__name__)

_HASH_STEP = 8 << 20  # readers hear of verified bytes at least this often
# Written bytes between flushes to disk behind the fill: the sync before the
# commit then finds little left (ten 8 MiB fills at once: 150-190 ms before
# their commit with none, about 10 ms with one every 4 MiB).
_FLUSH_STEP = 4 << 20


class NoRoom(FillFailed):
    """The cache cannot take this blob now: serve it without caching."""

    def __init__(self, digest: str, size: int | None) -> None:
        self.size = size
        super().__init__(digest, "no room in the cache")


class Fill:
    """One blob on its way into the cache; see the module docstring."""

    def __init__(
        self,
        digest: Digest,
        reads: Reads,
        disk: DiskStore,
        evictor: Evictor,
    ) -> None:
        self.digest = digest
        self._reads = reads
        self._parts = reads.parts
        self._disk = disk
        self._evictor = evictor
        self._metrics = reads.metrics
        self._temp: TempBlob = disk.new_temp()
        self.path: Path = self._temp.path  # the temp file, then the committed one
        self.size: int | None = None
        self.joiners = 0
        self.retries = 0
        self._written = 0
        self._flushed = 0  # where the last flush-behind started
        self._admitted = False  # the evictor made room for it
        self._committed = False
        self._abandoned = False
        self._error: BaseException | None = None
        self._progress = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"fill {digest}")

    # -- what readers use ------------------------------------------------------

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def readable(self) -> int:
        """Bytes that may be sent now: all once committed, else all but the last."""
        if self._committed or self.size is None:
            return self._written
        return min(self._written, self.size - 1)

    async def started(self) -> int:
        """The blob's size, once there is room for it; raises the fill's error."""
        while self.size is None or not self._admitted:
            await self._wait()
        return self.size

    async def readable_beyond(self, offset: int) -> int:
        """Wait until more than `offset` bytes are readable; return how many are."""
        while self.readable <= offset:
            await self._wait()
        return self.readable

    async def committed(self) -> None:
        """Wait for the blob to be committed; raises the fill's error."""
        while not self._committed:
            await self._wait()

    def abandon(self) -> None:
        """Stop the fill unless a client joined it: whoever started it no longer
        wants it (its request turned out unlinked). It counts as failed at once,
        so a request arriving now starts a fill of its own."""
        if self.joiners or self._committed or self.task.done():
            return
        self._abandoned = True
        self._error = FillFailed(str(self.digest), "no longer wanted")
        self.task.cancel()

    def direct(self) -> DirectBlob:
        """The same blob from the backing store, for readers of a fill that ran
        out of room (NoRoom) after they had some of its bytes."""
        assert self.size is not None
        return DirectBlob(self._reads, self.digest, self.size)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        await self._progress.wait()
        if self._error is not None:
            raise self._error

    def _notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    # -- the task ----------------------------------------------------------------

    async def _run(self) -> None:
        began = time.monotonic()
        self._metrics.fill_started()
        outcome: FillOutcome = "failed"
        log.debug("fill of %s: started", self.digest, extra={"digest": str(self.digest)})
        try:
            hasher = self.digest.hasher()
            await self._copy(hasher)
            log.debug(
                "fill of %s: %d bytes read, checking the digest",
                self.digest,
                self._written,
                extra={"digest": str(self.digest)},
            )
            if not self.digest.matches(hasher):
                outcome = "digest_mismatch"
                actual = f"{self.digest.algorithm}:{hasher.hexdigest()}"
                raise DigestMismatch(str(self.digest), actual)
            await self._disk.sync(self._temp)
            self.path = self._disk.commit(self._temp, self.digest, self._written)
            self._committed = True
            outcome = "committed"
            self._notify()
            await self._disk.sync_dir(self.path)
        except asyncio.CancelledError:
            if not self._committed:
                outcome = "cancelled"
                self._fail(FillFailed(str(self.digest), "shutting down"))
            raise
        except NoRoom as exc:
            outcome = "bypassed"
            self._fail(exc)
        except BlobUnknown as exc:
            outcome = "absent"
            self._fail(exc)
        except (FillFailed, BackendError) as exc:
            self._fail(exc)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                # Its readers go on from the backing store (see `direct`).
                outcome = "bypassed"
                self._evictor.disk_full(self.size or 0)
                self._fail(NoRoom(str(self.digest), self.size))
            else:
                self._fail(FillFailed(str(self.digest), f"cache write failed: {exc.strerror}"))
        finally:
            if self._admitted:
                self._evictor.release(self.size or 0)
            self._finished(outcome, time.monotonic() - began)

    def _finished(self, outcome: FillOutcome, duration: float) -> None:
        self._metrics.fill_finished(outcome, duration, self._written)
        quiet = outcome in ("committed", "absent", "bypassed") or self._abandoned
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "fill %s",
            outcome,
            extra={
                "event": "fill",
                "digest": str(self.digest),
                "size": self.size,
                "duration": round(duration, 6),
                "joiners": self.joiners,
                "outcome": outcome,
                "retries": self.retries,
                "error": str(self._error) if self._error else None,
                "error_class": type(self._error).__name__ if self._error else None,
            },
        )

    def _fail(self, error: BaseException) -> None:
        if not self._committed:
            self._disk.discard(self._temp)
        self._error = error
        self._notify()

    def _sized(self, size: int) -> None:
        self.size = size

    def _retried(self) -> None:
        """A retry of this task's own read: the whole blob, or part 0 of a ranged fill."""
        self._count_retry(part=self.size is not None and self._parts.splits(self.size))

    def _count_retry(self, part: bool = True) -> None:
        self.retries += 1
        self._metrics.fill_resumed(part=part)

    async def _copy(self, hasher: _Hash) -> None:
        """Part 0 (or all of a blob no larger than a part) is read here, hashed as
        it is written; the other parts come from `Parts` (parts.py)."""
        parts: Parts | None = None
        try:
            async with self._reads.chunks(
                self.digest, self._sized, self._retried, end=self._parts.first_end, owner=self
            ) as chunks:
                async for chunk in chunks:
                    if not self._admitted:
                        await self._admit()
                        parts = self._split()
                    await self._temp.run(_absorb, hasher, chunk, self._written)
                    self._advanced(len(chunk))
                    self._metrics.fill_wrote(len(chunk))
                    if parts is not None:
                        parts.check()
            if not self._admitted:  # an empty blob
                await self._admit()
            if parts is not None:
                await self._follow(parts, hasher)
        finally:
            if parts is not None:
                await parts.close()

    def _split(self) -> Parts | None:
        """Start fetching parts 1.. if the blob is larger than one part."""
        assert self.size is not None
        if not self._parts.splits(self.size):
            return None
        log.debug(
            "fill of %s: %d bytes, reading its other parts alongside",
            self.digest,
            self.size,
            extra={"digest": str(self.digest)},
        )
        return Parts(self.digest, self.size, self._temp, self._reads, self._count_retry, self)

    async def _follow(self, parts: Parts, hasher: _Hash) -> None:
        """Hash the parts' contiguous prefix as it grows; readers get it after."""
        assert self.size is not None
        self._metrics.fill_part_read()  # part 0, read above
        parts.first_done()
        while self._written < self.size:
            upto = min(await parts.beyond(self._written), self._written + _HASH_STEP)
            await self._temp.run(hash_range, hasher, self._written, upto)
            self._advanced(upto - self._written)

    def _advanced(self, count: int) -> None:
        """`count` more bytes are written and hashed: readers may have them."""
        self._written += count
        if self._written >= self._flushed + _FLUSH_STEP:
            self._flushed = self._written
            self._temp.flush_behind()
        self._notify()

    async def _admit(self) -> None:
        assert self.size is not None
        if not await self._evictor.reserve(self.size):
            raise NoRoom(str(self.digest), self.size)
        self._admitted = True
        self._notify()


def _absorb(fd: int, hasher: _Hash, chunk: bytes, offset: int) -> None:
    """Hash and write one chunk; runs in a thread (both release the GIL)."""
    hasher.update(chunk)
    write_at(fd, chunk, offset)
