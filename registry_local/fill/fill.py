"""A fill: one blob copied into the cache, as a task of its own.

The fill reads the blob into a temp file in pieces (pieces.py): bytes a reader
waits for first, then from the front. It knows which byte ranges it holds, so
two kinds of reader follow it:

- a reader of the whole blob follows the hashed prefix of the file, in order,
  woken as it grows; the last byte is held back until the digest is verified,
  so a corrupt blob is never served whole (the client sees a short body);
- a reader of a range gets each byte as soon as the fill holds it, as the
  backing store (or origin) holds it, before the digest is checked, as the CNCF
  registry serves ranges; lazy pullers check each chunk against their own table
  of contents. The bytes so served are counted: if the digest then fails, the
  fill is discarded as always, and the log says how many had gone out.

The fill hashes the contiguous prefix as it grows, from the page cache, so
verifying costs no second read. A digest mismatch, a source that keeps
failing, or a shutdown ends the fill with an error: nothing is committed and
every reader is released with that error. If the cache has no room for the
blob, the fill ends with NoRoom before any byte is written, and its readers
read from the source instead (direct.py). The task never depends on any reader
staying connected.
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
from .pieces import Pieces, hash_range
from .reading import Reading
from .sources import Source

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["Fill", "NoRoom"]

log = logging.getLogger(__name__)

_HASH_STEP = 8 << 20  # readers hear of verified bytes at least this often


class NoRoom(FillFailed):
    """The cache cannot take this blob now: serve it without caching."""

    def __init__(self, digest: str, size: int | None) -> None:
        self.size = size
        super().__init__(digest, "no room in the cache")


class Fill:
    """One blob on its way into the cache; see the module docstring. `temp` is
    the file it writes; `size`, the blob's size when it is known already;
    `first`, the first byte the reader that started it wants. `start` runs it."""

    def __init__(
        self,
        digest: Digest,
        source: Source,
        reading: Reading,
        temp: TempBlob,
        disk: DiskStore,
        evictor: Evictor,
        size: int | None = None,
        first: int = 0,
    ) -> None:
        self.digest = digest
        self.source = source
        self._reading = reading
        self._disk = disk
        self._evictor = evictor
        self._metrics = reading.metrics
        self._temp = temp
        self.path: Path = temp.path  # the temp file, then the committed one
        self.joiners = 0
        self.retries = 0
        self.unverified_sent = 0  # bytes of ranges served before the digest was checked
        self._hashed = 0
        self._admitted = False  # the evictor made room for it
        self._committed = False
        self._abandoned = False
        self._error: BaseException | None = None
        self._progress = asyncio.Event()
        self._pieces = Pieces(
            digest, self._temp, source, reading, self, self._notify, self._retried
        )
        self._pieces.size = size
        self._followers = 0  # readers of the whole blob waiting for its front
        self._background = False
        self._pieces.followed = lambda: self._followers > 0
        self._pieces.background = lambda: self._background
        self._first = first
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Fill:
        """Run the fill as a task of its own; returns itself."""
        self._task = asyncio.create_task(self._run(), name=f"fill {self.digest}")
        return self

    @property
    def task(self) -> asyncio.Task[None]:
        """The fill's task: it ends once the blob is committed or the fill
        failed, and its source's work after it (a write to the bucket) is done."""
        assert self._task is not None, "the fill was not started"
        return self._task

    async def ended(self) -> None:
        """Wait until the task has ended, however it ended."""
        await asyncio.wait([self.task])

    # -- what readers use ------------------------------------------------------

    @property
    def size(self) -> int | None:
        return self._pieces.size

    @property
    def background(self) -> bool:
        """A prefetch nobody has asked for yet: its front reads one at a time."""
        return self._background

    @background.setter
    def background(self, value: bool) -> None:
        self._background = value
        if not value:
            self._pieces.plan()  # a client waits now: the front at full width

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def done(self) -> bool:
        """Committed: the blob is verified and in the cache."""
        return self._committed

    @property
    def readable(self) -> int:
        """Bytes a reader of the whole blob may have now: all once committed,
        else the hashed prefix but the last byte."""
        size = self.size
        if self._committed or size is None:
            return self._hashed
        return min(self._hashed, size - 1)

    async def started(self) -> int:
        """The blob's size, once there is room for it and its source has answered
        (so a source that is down fails the request before any header goes out);
        raises the fill's error."""
        while not self._committed and (
            self.size is None or not self._admitted or not self._pieces.answered
        ):
            await self._wait()
        assert self.size is not None
        return self.size

    async def begun(self) -> int | None:
        """As `started`, but None when the cache turned out to have no room for
        the blob: its reader reads the source instead."""
        try:
            return await self.started()
        except NoRoom:
            return None

    async def readable_beyond(self, offset: int) -> int:
        """Wait until more than `offset` bytes are readable; return how many are."""
        if self.readable <= offset:
            self._followers += 1
            try:
                while self.readable <= offset:
                    await self._wait()
            finally:
                self._followers -= 1
        return self.readable

    async def held_from(self, start: int, end: int) -> int:
        """Wait until byte `start` is held, asking for [start, end) first if no
        read brings it; return where the run of held bytes from it ends (at most
        `end`). Raises the fill's error."""
        token: int | None = None
        try:
            while not self._committed:
                if self._error is not None:
                    raise self._error
                run = self._pieces.held.run_from(start)
                if run > start:
                    return min(run, end)
                if token is None:
                    token = self._pieces.want(start, end)
                await self._wait()
            return end
        finally:
            if token is not None:
                self._pieces.unwant(token)

    async def reach(self, position: int, end: int, verified: bool) -> int | None:
        """Wait until bytes from `position` may be read; return where they end
        (at most `end`): only verified bytes with `verified`, else bytes as they
        are held (counted as served unverified). None when the fill ran out of
        room: its reader goes on from the source (`direct`). Raises the fill's
        other errors."""
        try:
            if verified:
                return min(await self.readable_beyond(position), end)
            readable = await self.held_from(position, end)
        except NoRoom:
            return None
        self.served_unverified(readable - position)
        return readable

    async def kept(self) -> bool:
        """Wait for the commit: True once committed, False when the cache had no
        room for it. Raises the fill's other errors."""
        try:
            await self.committed()
        except NoRoom:
            return False
        return True

    async def held(self, start: int, end: int) -> None:
        """Wait until every byte of [start, end) is in the file (asking for
        nothing: for a reader that follows the fill, as the fleet's staging
        does). Raises the fill's error."""
        while not self._committed and not self._pieces.held.covers(start, end):
            await self._wait()

    def want(self, start: int, end: int) -> int:
        """Ask for [start, end) before the rest (the ranges of one request, all
        at once); a token for `unwant`."""
        return self._pieces.want(start, end)

    def unwant(self, token: int) -> None:
        self._pieces.unwant(token)

    def served_unverified(self, count: int) -> None:
        """`count` bytes of a range went out before the digest was checked."""
        if not self._committed:
            self.unverified_sent += count
            self._metrics.range_bytes_unverified(count)

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
        """The same blob from its source, for readers of a fill that ran out of
        room (NoRoom) after they had some of its bytes."""
        assert self.size is not None
        return DirectBlob(self.source.alone(), self._reading, self.digest, self.size)

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
        async with self.source.filling(self):  # the fleet's lease, if any, around it all
            await self._copy()

    async def _copy(self) -> None:
        began = time.monotonic()
        self._metrics.started()
        outcome: FillOutcome = "failed"
        log.debug("fill of %s: started", self.digest, extra={"digest": str(self.digest)})
        try:
            hasher = self.digest.hasher()
            try:
                await self._read_all(hasher)
            finally:
                await self._pieces.close()  # before anything closes the temp file
            log.debug(
                "fill of %s: %d bytes read, checking the digest",
                self.digest,
                self._hashed,
                extra={"digest": str(self.digest)},
            )
            if not self.digest.matches(hasher):
                outcome = "digest_mismatch"
                actual = f"{self.digest.algorithm}:{hasher.hexdigest()}"
                raise DigestMismatch(str(self.digest), actual)
            await self._disk.sync(self._temp)
            self.path = self._disk.commit(self._temp, self.digest, self._hashed)
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
                # Its readers go on from the source (see `direct`).
                outcome = "bypassed"
                self._evictor.disk_full(self.size or 0)
                self._fail(NoRoom(str(self.digest), self.size))
            else:
                self._fail(FillFailed(str(self.digest), f"cache write failed: {exc.strerror}"))
        finally:
            await self._pieces.close()
            if self._admitted:
                self._evictor.release(self.size or 0)
            self._finished(outcome, time.monotonic() - began)

    async def _read_all(self, hasher: _Hash) -> None:
        """Start the reads, make room once the size is known, and hash the
        prefix held as it grows to the end."""
        pieces = self._pieces
        if pieces.size is None:  # the first answer tells it, before any byte is written
            pieces.begin(self._first)
            while pieces.size is None:
                await self._pieces_progress()
        size = pieces.size
        if not await self._evictor.reserve(size):
            raise NoRoom(str(self.digest), size)
        self._admitted = True
        pieces.admitted.set()
        pieces.plan()
        self._notify()
        while self._hashed < size:
            run = pieces.held.run_from(self._hashed)
            if run <= self._hashed:
                await self._pieces_progress()
                continue
            upto = min(run, self._hashed + _HASH_STEP)
            await self._temp.run(hash_range, hasher, self._hashed, upto)
            self._hashed = upto
            self._notify()

    async def _pieces_progress(self) -> None:
        """Wait for the reads to move on; raises the error one of them failed with."""
        if self._pieces.error is not None:
            raise self._pieces.error
        await self._progress.wait()
        if self._pieces.error is not None:
            raise self._pieces.error

    def _finished(self, outcome: FillOutcome, duration: float) -> None:
        self._metrics.finished(outcome, duration, self._hashed)
        if self.unverified_sent and not self._committed:
            self._metrics.range_bytes_discarded(self.unverified_sent)
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
                "range_bytes_served": self.unverified_sent or None,
                "error": str(self._error) if self._error else None,
                "error_class": type(self._error).__name__ if self._error else None,
            },
        )

    def _fail(self, error: BaseException) -> None:
        if not self._committed:
            self._disk.discard(self._temp)
        self._error = error
        self._notify()

    def _retried(self) -> None:
        self.retries += 1
        size = self.size
        self._metrics.resumed(part=size is not None and self.source.policy.splits(size))
