"""One origin read per blob for the whole fleet: hosts coordinate through the bucket.

Every host of a fleet fills from the same bucket; behind it, an origin registry
(Docker Hub, ECR...) is slow, metered and rate-limited. When many hosts miss
the same new image at once, only one of them may ask the origin for each blob,
manifest and tag. The bucket they share is the coordinator (fleet/leases.py):

- the host that takes a blob's lease reads it from the origin, as a fill of its
  own, writes it through to the bucket, then releases the lease;
- every other host follows: its fill streams the blob from the holder's peer
  listener while the holder's fill is still running (fleet/peers.py), verifies
  it itself, and writes nothing to the bucket but a link its repository lacks;
- a follower that cannot reach the holder waits for the blob to appear in the
  bucket, with bounded backoff; a lease left by a dead holder is taken over
  after its time to live, and the new holder reads the origin.

Manifests and tags take the same leases, but followers simply wait for the
holder's answer to appear in the bucket: they are small.

Under faults (a holder killed mid-fill) the origin may be read again, by the
host that takes the lease over, but never by two hosts at the same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ..backing.backend import Backend, ObjectStream
from ..backing.distribution import DistributionStore
from ..config import FleetSettings
from ..errors import BackendError, BackendUnavailable
from ..fleet.leases import Held, Leases, Seen
from ..fleet.peers import PeerClient, open_peer_client
from ..oci.digest import Digest
from ..origin.mapping import OriginRepo
from ..telemetry.logs import error_fields
from ..telemetry.metrics import Metrics

__all__ = ["Fleet", "FleetBlob", "open_fleet"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Open bytes [offset, end) of the blob in the bucket (None: not there).
Open = Callable[[int, int | None], Awaitable[ObjectStream | None]]

_FIRST_DELAY = 0.02  # seconds between looks at the bucket, doubling...
_MAX_DELAY = 0.25  # ...up to this: a few small requests a second per waiting host
_PEER_TRIES = 2  # failed reads from a holder before a follower stops asking it


class Fleet:
    """The hosts of one bucket, seen from this one; see the module docstring."""

    def __init__(
        self,
        leases: Leases,
        peers: PeerClient,
        metrics: Metrics,
    ) -> None:
        self.leases = leases
        self.peers = peers
        self.metrics = metrics
        self.wait_limit = max(60.0, 20 * leases.ttl)

    def blob(self, repo: OriginRepo, digest: Digest) -> FleetBlob:
        """The source of a fill of `digest`, which `repo`'s origin serves."""
        return FleetBlob(self, repo, digest)

    async def once(
        self,
        key: str,
        work: Callable[[], Awaitable[T]],
        done: Callable[[], Awaitable[T | None]],
    ) -> T:
        """`work()` if this host takes the lease `key` (unless `done()` finds the
        result in the bucket first); else `done()`'s result, once the holder has
        put it there. Raises BackendError, BackendUnavailable when waiting on
        another host takes longer than the wait limit."""
        state = await self.leases.take(key)
        waiting = _Waiting(self.wait_limit, key)
        while True:
            if isinstance(state, Held):
                try:
                    result = await done()  # another host may have finished just now
                    return result if result is not None else await work()
                finally:
                    await state.release()
            if state is not None:
                result = await done()
                if result is not None:
                    return result
                await waiting.pause()
            state = await self.next_state(key, state)

    async def next_state(self, key: str, seen: Seen | None) -> Held | Seen | None:
        """The lease after a pause: still theirs, ours (gone, or abandoned and
        taken over), or None to look again."""
        if seen is None:
            return await self.leases.take(key)
        current = await self.leases.look(key, seen)
        if current is None:
            return await self.leases.take(key)
        if self.leases.abandoned(current):
            return await self.leases.take_over(current) or await self.leases.look(key)
        return current


class _Waiting:
    """Bounded backoff between looks at the bucket."""

    def __init__(self, limit: float, key: str) -> None:
        self._deadline = time.monotonic() + limit
        self._delay = _FIRST_DELAY
        self._key = key

    async def pause(self) -> None:
        if time.monotonic() > self._deadline:
            raise BackendUnavailable("lease", self._key, "another host holds it for too long")
        await asyncio.sleep(self._delay)
        self._delay = min(_MAX_DELAY, self._delay * 2)


class FleetBlob:
    """Where a fill reads a blob from an origin, as the fleet decides.

    The first read takes the blob's lease or learns who holds it; every read
    after that (resumes included) goes to the origin as the holder, or to the
    holder's peer listener, or to the bucket, as the fleet's state says. Reads
    of the bucket go through `bucket` (which holds an S3 slot while it streams);
    waiting for another host holds none.
    """

    def __init__(self, fleet: Fleet, repo: OriginRepo, digest: Digest) -> None:
        self._fleet = fleet
        self._repo = repo
        self._digest = digest
        self._key = fleet.leases.layout.blob_lease(digest)
        self._state: Held | Seen | None = None
        self._started = False
        self._peer_failures = 0  # failed reads from the current holder
        self._holder: str | None = None  # the holder those failures were with
        self._reading = False  # the holder has made its first read
        self._in_bucket = False  # found in the bucket after all: read it there

    @property
    def holds(self) -> bool:
        """Whether this host holds the lease: it read the origin, and writes the
        blob through to the bucket."""
        return isinstance(self._state, Held)

    async def open_blob(self, offset: int, end: int | None, bucket: Open) -> ObjectStream | None:
        """Bytes [offset, end) from wherever the fleet's state says; None if
        there is no such blob. Raises BackendError."""
        if self._in_bucket:
            return await bucket(offset, end)
        if not self._started:
            self._started = True
            self._state = await self._fleet.leases.take(self._key)
        waiting = _Waiting(self._fleet.wait_limit, self._key)
        while True:
            if isinstance(self._state, Held):
                return await self._as_holder(offset, end, bucket)
            if isinstance(self._state, Seen):
                stream = await self._as_follower(self._state, offset, end, bucket)
                if stream is not None:
                    return stream
                await waiting.pause()
            self._state = await self._fleet.next_state(self._key, self._state)

    async def _as_holder(self, offset: int, end: int | None, bucket: Open) -> ObjectStream | None:
        if not self._reading:
            self._reading = True
            # The lease may have been free because the holder just finished.
            stream = await bucket(offset, end)
            if stream is not None:
                await self.release()
                self._state, self._in_bucket = None, True
                return stream
            self._fleet.metrics.origin_fetched("blob")
        return await self._repo.open_blob(self._digest, offset, end)

    async def _as_follower(
        self, seen: Seen, offset: int, end: int | None, bucket: Open
    ) -> ObjectStream | None:
        """The holder's fill, else the bucket's copy; None while neither is there."""
        if seen.holder != self._holder:  # a new holder (a takeover): worth asking
            self._holder, self._peer_failures = seen.holder, 0
        if seen.holder is not None and self._peer_failures < _PEER_TRIES:
            try:
                return await self._fleet.peers.open_blob(seen.holder, self._digest, offset, end)
            except BackendUnavailable as exc:
                self._peer_failures += 1
                if self._peer_failures == _PEER_TRIES:
                    self._fleet.metrics.fleet_fell_back()
                    log.warning(
                        "cannot stream %s from %s (%s): waiting for the bucket",
                        self._digest,
                        seen.holder,
                        exc.reason,
                        extra={
                            "digest": str(self._digest),
                            "holder": seen.holder,
                            **error_fields(exc),
                        },
                    )
        return await bucket(offset, end)

    async def release(self) -> None:
        """Give the lease back, if this host holds it (its work is in the bucket,
        or it failed); safe to call more than once."""
        if isinstance(self._state, Held):
            await self._state.release()

    async def holder_done(self) -> None:
        """Wait, bounded, until the holder has let go of the lease: its write to
        the bucket is finished (or it failed, or died). Followers call this
        before they check what the bucket still lacks."""
        if not isinstance(self._state, Seen):
            return
        waiting = _Waiting(self._fleet.wait_limit, self._key)
        seen: Seen | None = self._state
        with contextlib.suppress(BackendError):
            while seen is not None and not self._fleet.leases.abandoned(seen):
                await waiting.pause()
                seen = await self._fleet.leases.look(self._key, seen)


@contextlib.asynccontextmanager
async def open_fleet(
    settings: FleetSettings,
    backend: Backend,
    store: DistributionStore,
    metrics: Metrics,
) -> AsyncIterator[Fleet | None]:
    """The fleet, or None (with one clear warning) when the backing store does
    not refuse a second conditional create: then each host fills on its own."""
    leases = Leases(backend, store.layout, settings.advertise_url, settings.lease_ttl, metrics)
    try:
        supported = await leases.probe()
    except BackendError as exc:
        log.warning("fleet coordination off: could not probe the backing store: %s", exc)
        supported = False
    if not supported:
        log.warning(
            "fleet coordination off: %s does not honour conditional writes "
            "(If-None-Match), so each host reads the origin on its own",
            backend.description,
        )
        metrics.fleet_coordinating(False)
        yield None
        return
    metrics.fleet_coordinating(True)
    log.info("fleet coordination on: peers reach this host at %s", settings.advertise_url)
    async with open_peer_client(settings.token, settings.read_timeout, metrics) as peers:
        yield Fleet(leases, peers, metrics)
