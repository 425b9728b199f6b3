"""One blob from an origin, as the fleet reads it: the lease's whole life in one place.

For each fill of a blob that only an origin has, this host either holds the
blob's lease or follows the host that does (leases.py):

- the **holder** reads the origin (or, having taken a dead holder's lease over,
  first the parts that host staged), stages the blob in the bucket part by part
  as its fill holds them (staging.py), serves its fill to at most
  --peer-max-streams followers at once (server/peer.py), and, once its fill is
  verified and committed, composes the final object from the staged parts
  server-side (or writes a blob of one part whole), links it, removes the parts
  and lets the lease go;
- a **follower** streams the holder's fill from its peer listener while the
  holder has a stream to spare; otherwise (the holder is busy, or a blob of
  several parts) it reads the staged parts from the bucket as they land,
  learning of each by a long poll on the holder's peer listener, one request at
  a time; when the holder cannot be reached it waits for the lease to change or
  the final object to appear, with jittered backoff; when the holder dies it
  takes the lease over and becomes the holder.

The lease is taken here, on the fill's first read, and given back here, by
`finish`, once the blob is in the bucket (or the fill failed). Reads of the
bucket go through `open_key`, which holds an S3 slot while the body streams:
waiting on another host holds none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..backing.backend import ObjectStream
from ..errors import BackendError, BackendUnavailable, DigestMismatch, FillFailed
from ..oci.digest import Digest
from ..origin.mapping import OriginRepo
from ..telemetry.logs import error_fields
from ..telemetry.metrics import Metrics
from .leases import Backoff, Held, Seen
from .peers import PeerBusy, Progress
from .staging import Staging

if TYPE_CHECKING:
    from .coordination import Fleet

__all__ = ["FleetBlob", "HeldFile", "OpenKey", "Stager"]

log = logging.getLogger(__name__)

_PEER_TRIES = 2  # failed reads from a holder before a follower stops asking it

# Open bytes [offset, end) of an object of the bucket, holding an S3 slot while it
# streams; None when there is no such object.
OpenKey = Callable[[str, int, int | None], Awaitable[ObjectStream | None]]


class HeldFile(Protocol):
    """What the fleet needs of this host's fill of the blob (fill/fill.py)."""

    @property
    def path(self) -> Path:
        """The file the fill writes (the temp file, then the committed one)."""

    async def started(self) -> int:
        """The blob's size, once the fill has begun; raises the fill's error."""

    async def held(self, start: int, end: int) -> None:
        """Wait until bytes [start, end) are in the file; raises the fill's error."""

    async def committed(self) -> None:
        """Wait until the blob is verified and committed; raises the fill's error."""


class Stager:
    """The holder's staging of one blob: each part put in the bucket as soon as
    the fill holds it, and who waits to hear of it."""

    def __init__(
        self,
        staging: Staging,
        digest: Digest,
        fill: HeldFile,
        already: list[tuple[int, int]],
        metrics: Metrics,
    ) -> None:
        self._metrics = metrics
        self._staging = staging
        self._digest = digest
        self._fill = fill
        self._fd = os.open(fill.path, os.O_RDONLY | os.O_CLOEXEC)  # read through the rename
        self.spans: list[tuple[int, int]] = list(already)
        self.size: int | None = None
        self.done = False  # the final object is in the bucket, and linked
        self.streams = 0  # followers granted a stream of this fill (server/peer.py)
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"stage {digest}")

    async def _run(self) -> None:
        size = self.size = await self._fill.started()
        self._announce()
        if not self._staging.stages(size):
            return  # written whole once verified
        for span in self._staging.spans(size):
            if span in self.spans:
                continue  # staged by the holder before us
            await self._fill.held(*span)
            await self._put(span)

    async def _put(self, span: tuple[int, int]) -> None:
        start, end = span
        # Read from the file as it is sent, through the descriptor held since the
        # start, which reads on through the rename at commit. The backend retries.
        await self._staging.put(self._digest, start, end, Path(f"/dev/fd/{self._fd}"))
        self._metrics.fleet_staged(end - start)
        self.spans.append(span)
        self.spans.sort()
        self._announce()

    def grant_stream(self, limit: int) -> bool:
        """Whether one more follower may stream this fill: at most `limit` ever
        do, so no host sends more than `limit` times the blob."""
        if self.streams >= limit:
            return False
        self.streams += 1
        return True

    def _announce(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def complete(self) -> list[tuple[int, int]] | None:
        """Every part staged (the rest from the committed file, should staging
        have lagged); the spans, in order. None for a blob of one part: it is
        not staged."""
        with contextlib.suppress(asyncio.CancelledError, FillFailed):
            await self._task
        assert self.size is not None
        if not self._staging.stages(self.size):
            return None
        for span in self._staging.spans(self.size):
            if span not in self.spans:
                await self._put(span)
        return list(self.spans)

    def finished(self, in_bucket: bool) -> None:
        """The blob is in the bucket whole (`in_bucket`), or this host gave up."""
        self.done = in_bucket
        self._task.cancel()
        self._announce()
        os.close(self._fd)

    async def beyond(self, have: int, patience: float) -> Progress:
        """What is staged, once more than `have` parts are (or the blob is done,
        or `patience` seconds passed): for a follower's long poll."""
        if len(self.spans) <= have and not self.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), patience)
        return Progress(self.size, list(self.spans), self.done)


class FleetBlob:
    """The fleet's view of one blob for one fill on this host; see the module docstring."""

    def __init__(self, fleet: Fleet, repo: OriginRepo, digest: Digest) -> None:
        self._fleet = fleet
        self._repo = repo
        self._digest = digest
        self._key = fleet.leases.layout.blob_lease(digest)
        self._blob_key = fleet.leases.layout.blob_data(digest)
        self._state: Held | Seen | None = None
        self._started = False
        self._fill: HeldFile | None = None
        self._stager: Stager | None = None
        self._peer_failures = 0  # failed reads from the current holder
        self._holder: str | None = None  # the holder those failures were with
        self._staged_only = False  # the holder had no stream to spare: read its parts
        self._reading = False  # as the holder: the first read made
        self._in_bucket = False  # found in the bucket after all: read it there

    @property
    def holds(self) -> bool:
        """Whether this host holds the lease: it reads the origin, and writes the
        blob to the bucket."""
        return isinstance(self._state, Held)

    def attach(self, fill: HeldFile) -> None:
        """The fill this blob is read for (staged from, should this host hold it)."""
        self._fill = fill

    # -- reads ------------------------------------------------------------------------

    async def open_blob(
        self, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        """Bytes [offset, end) from wherever the fleet's state says; None if
        there is no such blob. Raises BackendError."""
        if self._in_bucket:
            return await open_key(self._blob_key, offset, end)
        if not self._started:
            self._started = True
            self._state = await self._fleet.leases.take(self._key)
        waiting = Backoff(self._fleet.wait_limit, self._key)
        while True:
            if isinstance(self._state, Held):
                return await self._as_holder(offset, end, open_key)
            if isinstance(self._state, Seen):
                stream = await self._as_follower(self._state, offset, end, open_key)
                if stream is not None:
                    return stream
                await waiting.pause()
            self._state = await self._fleet.next_state(self._key, self._state)

    async def _as_holder(
        self, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        if not self._reading:
            self._reading = True
            # The lease may have been free because the holder just finished.
            stream = await open_key(self._blob_key, offset, end)
            if stream is not None:
                self._in_bucket = True
                if not self._state_held().taken_over:
                    await self._release()
                    self._state = None
                # Else its holder died after writing it: finish() ends its work.
                return stream
            self._fleet.metrics.origin_fetched("blob")
            already = await self._staged_before()
            if self._fill is not None:
                self._stager = Stager(
                    self._fleet.staging, self._digest, self._fill, already, self._fleet.metrics
                )
                self._fleet.holding[self._digest] = self._stager
        spans = self._stager.spans if self._stager is not None else []
        inside = next((s for s in spans if s[0] <= offset < s[1]), None)
        if inside is None:
            return await self._repo.open_blob(self._digest, offset, end)
        # Taken over from a host that died: what it staged comes from the bucket.
        size = await self._repo.origin.blob_size(self._repo.remote, self._digest)
        if size is None:
            return None
        return _Spliced(
            size, offset, end, lambda at, stop: self._holder_segment(at, stop, open_key)
        )

    async def _staged_before(self) -> list[tuple[int, int]]:
        """The parts a holder before us staged (a lease taken over), if any."""
        try:
            return await self._fleet.staging.staged(self._digest)
        except BackendError:
            return []

    async def _holder_segment(
        self, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        assert self._stager is not None
        for start, stop in self._stager.spans:
            if start <= offset < stop:
                key = self._fleet.staging.layout.staged_part(self._digest, start, stop)
                stream = await open_key(key, offset - start, min(stop, end or stop) - start)
                if stream is not None:
                    return stream
        return await self._repo.open_blob(self._digest, offset, end)

    async def _as_follower(
        self, seen: Seen, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        """The holder's fill, else its staged parts, else the bucket's copy; None
        while none of them is there."""
        if seen.holder != self._holder:  # a new holder (a takeover): worth asking
            self._holder, self._peer_failures, self._staged_only = seen.holder, 0, False
        holder = seen.holder
        if holder is not None and self._peer_failures < _PEER_TRIES:
            if not self._staged_only:
                try:
                    return await self._fleet.peers.open_blob(holder, self._digest, offset, end)
                except PeerBusy:
                    self._staged_only = True  # its streams are taken: the bucket carries us
                    self._fleet.metrics.fleet_peer_busy()
                except BackendUnavailable as exc:
                    self._peer_failed(holder, exc)
            if self._staged_only:
                stream = await self._from_staged(holder, offset, end, open_key)
                if stream is not None:
                    return stream
        return await open_key(self._blob_key, offset, end)

    def _peer_failed(self, holder: str, exc: BackendUnavailable) -> None:
        self._peer_failures += 1
        if self._peer_failures == _PEER_TRIES:
            self._fleet.metrics.fleet_fell_back()
            log.warning(
                "cannot stream %s from %s (%s): waiting for the bucket",
                self._digest,
                holder,
                exc.reason,
                extra={"digest": str(self._digest), "holder": holder, **error_fields(exc)},
            )

    async def _from_staged(
        self, holder: str, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        """A stream over the holder's staged parts from `offset`, each read as
        the holder says it landed; for a blob of one part, the final object
        once the holder says it is in the bucket. None if the holder cannot
        say (it is gone, or gave up)."""
        peers, staging = self._fleet.peers, self._fleet.staging
        try:
            progress = await peers.progress(holder, self._digest, 0, wait=False)
            while not progress.done and (
                progress.size is None or not staging.stages(progress.size)
            ):
                # Not begun, or written whole once verified: hear when (no polling).
                progress = await peers.progress(holder, self._digest, len(progress.spans))
        except BackendUnavailable as exc:
            self._peer_failed(holder, exc)
            return None
        if progress.done:
            return await open_key(self._blob_key, offset, end)
        assert progress.size is not None

        async def segment(at: int, stop: int | None) -> ObjectStream | None:
            return await self._staged_segment(holder, at, stop, open_key)

        return _Spliced(progress.size, offset, end, segment)

    async def _staged_segment(
        self, holder: str, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        """The staged part holding `offset`, once it has landed (the holder's
        long poll says so); the final object once the holder is done."""
        have = 0
        while True:
            progress = await self._fleet.peers.progress(holder, self._digest, have)
            if progress.done:
                return await open_key(self._blob_key, offset, end)
            for start, stop in progress.spans:
                if start <= offset < stop:
                    key = self._fleet.staging.layout.staged_part(self._digest, start, stop)
                    last = stop if end is None else min(end, stop)
                    stream = await open_key(key, offset - start, last - start)
                    if stream is not None:
                        return _Counted(stream, self._fleet.metrics)
                    return await open_key(self._blob_key, offset, end)  # composed meanwhile
            have = len(progress.spans)

    # -- the bucket, afterwards -------------------------------------------------------

    async def finish(self, name: str, publish: Callable[[], Awaitable[None]]) -> None:
        """Once the fill is committed here: as the holder, put the blob in the
        bucket (composed from its staged parts, or whole), link it into `name`
        (`publish`) and remove the parts; as a follower, wait for the holder
        (taking the lease over if it died, to end its work), then link what
        `name` still lacks. Then let the lease go. A fill that
        failed its digest check discards what it staged; one that stopped for
        another reason leaves its parts to whoever takes the lease over."""
        fill = self._fill
        assert fill is not None
        composed = in_bucket = False
        try:
            try:
                await fill.committed()
            except DigestMismatch:
                if self._stager is not None:
                    await self._fleet.staging.clear(self._digest)
                raise
            if not self.holds:
                await self._holder_done()
            if self._written_before():
                if await self._fleet.store.blob_linked(name, self._digest):
                    in_bucket = True
                    await publish()
                    await self._tidy()
                    return
            spans = None if self._stager is None else await self._stager.complete()
            if spans is not None:
                if await self._fleet.store.blob_size(self._digest) is None:
                    await self._fleet.staging.compose(self._digest, spans)
                    self._fleet.metrics.origin_written_through("blob")
                composed = True
            elif await self._fleet.store.put_blob_file(self._digest, fill.path):
                self._fleet.metrics.origin_written_through("blob")
            await self._fleet.store.link_blob(name, self._digest)
            in_bucket = True
            await publish()
            if composed:
                await self._fleet.staging.clear(self._digest)
            else:
                await self._tidy()
        finally:
            if self._stager is not None:
                self._stager.finished(in_bucket)
                self._fleet.holding.pop(self._digest, None)
            await self._release()

    def _state_held(self) -> Held:
        assert isinstance(self._state, Held)
        return self._state

    async def _release(self) -> None:
        if isinstance(self._state, Held):
            await self._state.release()

    def _written_before(self) -> bool:
        """Whether another host may have put the blob in the bucket already: it
        held the lease (a follower's view), or held it and died."""
        state = self._state
        return not isinstance(state, Held) or self._in_bucket or state.taken_over

    async def _tidy(self) -> None:
        """As the holder after one that died: remove the parts it staged (the
        blob is whole in the bucket now, or written whole by this host)."""
        if isinstance(self._state, Held) and self._state.taken_over:
            await self._fleet.staging.clear(self._digest)

    async def _holder_done(self) -> None:
        """Wait, bounded, until the holder has let go of the lease: its write to
        the bucket is finished (or it failed). If it died, take the lease over
        to finish its work, unless another follower did first: wait for that one."""
        waiting = Backoff(self._fleet.wait_limit, self._key)
        leases = self._fleet.leases
        with contextlib.suppress(BackendError):
            while isinstance(self._state, Seen):
                seen = self._state
                if leases.abandoned(seen):
                    self._state = await leases.take_over(seen) or await leases.look(self._key)
                    continue
                await waiting.pause()
                self._state = await leases.look(self._key, seen)


class _Counted:
    """A staged part's bytes as a follower reads them, counted."""

    def __init__(self, stream: ObjectStream, metrics: Metrics) -> None:
        self._stream = stream
        self._metrics = metrics
        self.size = stream.size

    async def read(self, n: int) -> bytes:
        chunk = await self._stream.read(n)
        self._metrics.fleet_staged_read(len(chunk))
        return chunk

    async def close(self) -> None:
        await self._stream.close()


class _Spliced:
    """One stream of a blob from several sources in turn (staged parts, then the
    origin or the final object): whichever holds the next byte, opened when the
    bytes reach it."""

    def __init__(
        self,
        size: int,
        offset: int,
        end: int | None,
        segment: Callable[[int, int | None], Awaitable[ObjectStream | None]],
    ) -> None:
        self.size = size
        self._position = offset
        self._stop = size if end is None else min(end, size)
        self._segment = segment
        self._current: ObjectStream | None = None

    async def read(self, n: int) -> bytes:
        while self._position < self._stop:
            if self._current is None:
                self._current = await self._segment(self._position, self._stop)
                if self._current is None:
                    raise BackendUnavailable("GetObject", "staged", "the next part went away")
            chunk = await self._current.read(min(n, self._stop - self._position))
            if chunk:
                self._position += len(chunk)
                return chunk
            await self._current.close()  # that part is done: the next one
            self._current = None
        return b""

    async def close(self) -> None:
        if self._current is not None:
            await self._current.close()
            self._current = None
