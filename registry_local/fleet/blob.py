"""One blob from an origin, as the fleet reads it for one fill of this host.

For each fill of a blob that only an origin has, this host either holds the
blob's lease or follows the host that does (leases.py):

- the **holder** reads the origin (or, having taken a dead holder's lease over,
  first the parts that host staged), stages the blob in the bucket part by part
  as its fill holds them (stager.py), serves its fill to at most
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

The lease is this object's alone: the fill enters `filling` around its whole
life, which takes the lease on entry and, on exit, once the fill has ended,
puts the blob in the bucket, links it and gives the lease back. Reads of the
bucket go through `open_key`, which holds an S3 slot while the body streams:
waiting on another host holds none.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ..backing.backend import ObjectStream
from ..backing.distribution import DistributionStore
from ..errors import BackendError, BackendUnavailable, DigestMismatch, FillFailed
from ..oci.digest import Digest
from ..origin.mapping import OriginRepo
from ..telemetry.logs import error_fields
from ..telemetry.metrics import FleetRecorder, OriginRecorder
from ..telemetry.writes import write_failed
from .leases import Backoff, Leases
from .peers import PeerBusy, PeerClient
from .stager import HeldFile, Holding, Stager
from .staging import Staging
from .streams import CountedStream, SplicedStream

__all__ = ["FleetBlob", "FleetTools", "OpenKey"]

log = logging.getLogger(__name__)

_PEER_TRIES = 2  # failed reads from a holder before a follower stops asking it

# Open bytes [offset, end) of an object of the bucket, holding an S3 slot while it
# streams; None when there is no such object.
OpenKey = Callable[[str, int, int | None], Awaitable[ObjectStream | None]]


@dataclass(frozen=True)
class FleetTools:
    """What one blob's life in the fleet uses: the leases, the other hosts, the
    staged parts, the bucket, the blobs this host stages, and how long to wait
    on another host at most."""

    leases: Leases
    peers: PeerClient
    staging: Staging
    store: DistributionStore
    holding: Holding
    fleet_metrics: FleetRecorder
    origin_metrics: OriginRecorder
    wait_limit: float


class FleetBlob:
    """The fleet's reading of one blob for one fill on this host, for the
    repository `name` (linked into it once written); see the module docstring.
    `publish` tells the cache the link is in the bucket."""

    def __init__(
        self,
        tools: FleetTools,
        repo: OriginRepo,
        digest: Digest,
        name: str,
        publish: Callable[[], Awaitable[None]],
    ) -> None:
        self._tools = tools
        self._repo = repo
        self._digest = digest
        self._name = name
        self._publish = publish
        self._lease = tools.leases.lease(tools.leases.layout.blob_lease(digest))
        self._blob_key = tools.leases.layout.blob_data(digest)
        self._stager: Stager | None = None
        self._fill: HeldFile | None = None
        self._peer_failures = 0  # failed reads from the current holder
        self._holder: str | None = None  # the holder those failures were with
        self._staged_only = False  # the holder had no stream to spare: read its parts
        self._reading = False  # as the holder: the first read made
        self._in_bucket = False  # found in the bucket after all: read it there

    @contextlib.asynccontextmanager
    async def filling(self, fill: HeldFile) -> AsyncIterator[None]:
        """The lease around `fill`'s whole life: taken on entry (or on the first
        read, should the bucket not answer now); on exit, the blob put in the
        bucket and linked (or what a failed fill staged discarded), and the
        lease given back."""
        self._fill = fill
        with contextlib.suppress(BackendError):
            await self._lease.take()
        in_bucket = False
        try:
            yield
            in_bucket = await self._finish(fill)
        except (BackendError, OSError) as exc:
            write_failed(self._tools.origin_metrics, self._name, self._digest, exc)
        finally:
            if self._stager is not None:
                self._stager.finished(in_bucket)
                self._tools.holding.remove(self._digest, self._stager)
            await self._lease.release()

    # -- reads ------------------------------------------------------------------------

    async def open_blob(
        self, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        """Bytes [offset, end) from wherever the fleet's state says; None if
        there is no such blob. Raises BackendError."""
        if self._in_bucket:
            return await open_key(self._blob_key, offset, end)
        waiting = Backoff(self._tools.wait_limit, self._lease.key)
        while True:
            if self._lease.mine:
                return await self._as_holder(offset, end, open_key)
            if self._lease.other:
                stream = await self._as_follower(offset, end, open_key)
                if stream is not None:
                    return stream
                await waiting.pause()
            await self._lease.advance()

    async def _as_holder(
        self, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        tools = self._tools
        if not self._reading:
            self._reading = True
            # The lease may have been free because the holder just finished.
            stream = await open_key(self._blob_key, offset, end)
            if stream is not None:
                self._in_bucket = True
                if not self._lease.taken_over:
                    await self._lease.release()
                # Else its holder died after writing it: `_finish` ends its work.
                return stream
            tools.origin_metrics.fetched("blob")
            already = await self._staged_before()
            if self._fill is not None:
                self._stager = Stager(
                    tools.staging, self._digest, self._fill, already, tools.fleet_metrics
                ).start()
                tools.holding.add(self._digest, self._stager)
        spans = self._stager.spans if self._stager is not None else []
        inside = next((s for s in spans if s[0] <= offset < s[1]), None)
        if inside is None:
            return await self._repo.open_blob(self._digest, offset, end)
        # Taken over from a host that died: what it staged comes from the bucket.
        size = await self._repo.origin.blob_size(self._repo.remote, self._digest)
        if size is None:
            return None
        return SplicedStream(
            size, offset, end, lambda at, stop: self._holder_segment(at, stop, open_key)
        )

    async def _staged_before(self) -> list[tuple[int, int]]:
        """The parts a holder before us staged (a lease taken over), if any."""
        try:
            return await self._tools.staging.staged(self._digest)
        except BackendError:
            return []

    async def _holder_segment(
        self, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        assert self._stager is not None
        for start, stop in self._stager.spans:
            if start <= offset < stop:
                read = self._tools.staging.part_read(self._digest, (start, stop), offset, end)
                stream = await open_key(*read)
                if stream is not None:
                    return stream
        return await self._repo.open_blob(self._digest, offset, end)

    async def _as_follower(
        self, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        """The holder's fill, else its staged parts, else the bucket's copy; None
        while none of them is there."""
        holder = self._lease.holder
        if holder != self._holder:  # a new holder (a takeover): worth asking
            self._holder, self._peer_failures, self._staged_only = holder, 0, False
        if holder is not None and self._peer_failures < _PEER_TRIES:
            if not self._staged_only:
                try:
                    return await self._tools.peers.open_blob(holder, self._digest, offset, end)
                except PeerBusy:
                    self._staged_only = True  # its streams are taken: the bucket carries us
                    self._tools.fleet_metrics.peer_busy()
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
            self._tools.fleet_metrics.fell_back()
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
        peers, staging = self._tools.peers, self._tools.staging
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

        return SplicedStream(progress.size, offset, end, segment)

    async def _staged_segment(
        self, holder: str, offset: int, end: int | None, open_key: OpenKey
    ) -> ObjectStream | None:
        """The staged part holding `offset`, once it has landed (the holder's
        long poll says so); the final object once the holder is done."""
        have = 0
        while True:
            progress = await self._tools.peers.progress(holder, self._digest, have)
            if progress.done:
                return await open_key(self._blob_key, offset, end)
            for start, stop in progress.spans:
                if start <= offset < stop:
                    span = (start, stop)
                    stream = await open_key(
                        *self._tools.staging.part_read(self._digest, span, offset, end)
                    )
                    if stream is not None:
                        return CountedStream(stream, self._tools.fleet_metrics)
                    return await open_key(self._blob_key, offset, end)  # composed meanwhile
            have = len(progress.spans)

    # -- the bucket, afterwards -------------------------------------------------------

    async def _finish(self, fill: HeldFile) -> bool:
        """Once the fill has ended, committed: as the holder, put the blob in the
        bucket (composed from its staged parts, or whole), link it into the
        repository and remove the parts; as a follower, wait for the holder
        (taking the lease over if it died, to end its work), then link what the
        repository still lacks. A fill that failed its digest check discards
        what it staged; one that stopped for another reason leaves its parts to
        whoever takes the lease over. True once the blob is in the bucket."""
        tools, name, digest = self._tools, self._name, self._digest
        try:
            await fill.committed()
        except DigestMismatch:
            if self._stager is not None:
                await tools.staging.clear(digest)
            return False
        except FillFailed:
            return False  # nothing was committed: nothing to write
        if not self._lease.mine:
            with contextlib.suppress(BackendError):
                await self._lease.until_released(tools.wait_limit)
        if self._written_before() and await tools.store.blob_linked(name, digest):
            await self._publish()
            await self._tidy()
            return True
        spans = None if self._stager is None else await self._stager.complete()
        if spans is not None:
            if await tools.store.blob_size(digest) is None:
                await tools.staging.compose(digest, spans)
                tools.origin_metrics.written_through("blob")
        elif await tools.store.put_blob_file(digest, fill.path):
            tools.origin_metrics.written_through("blob")
        await tools.store.link_blob(name, digest)
        await self._publish()
        if spans is not None:
            await tools.staging.clear(digest)
        else:
            await self._tidy()
        return True

    def _written_before(self) -> bool:
        """Whether another host may have put the blob in the bucket already: it
        held the lease (a follower's view), or held it and died."""
        return not self._lease.mine or self._in_bucket or self._lease.taken_over

    async def _tidy(self) -> None:
        """As the holder after one that died: remove the parts it staged (the
        blob is whole in the bucket now, or written whole by this host)."""
        if self._lease.taken_over:
            await self._tools.staging.clear(self._digest)
