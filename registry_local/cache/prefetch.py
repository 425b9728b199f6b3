"""Prefetch: an image's blobs start filling as soon as its manifest is served.

Engines fetch a few layers at a time (dockerd and containerd: three), so on a
cold cache the fills would run a few at a time while the S3 link sits idle.
When an image manifest is served by GET, its config and every layer this host
lacks start filling in the background, under the same single-flight as client
fills: a client that then asks for a layer joins its fill. An index prefetches
nothing (engines pull one platform: its manifest comes next). Until a client
asks for the whole blob, a prefetch reads one part at a time and waits behind
client reads for S3 slots (fill/slots.py); prefetches run a few at a time,
never start when the cache has no room, and fail quietly: the client's own
request reports any error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..errors import BackendError, FillFailed, RegistryError
from ..fill.fill import Fill
from ..oci.digest import Digest
from ..telemetry.metrics import PrefetchRecorder
from .blobs import BlobCache
from .manifests import Manifest

__all__ = ["Prefetcher"]

log = logging.getLogger(__name__)


class Prefetcher:
    """The prefetches of this host, a few at a time, and what they brought that
    nobody read before it was evicted. `start` hooks it to the cache."""

    def __init__(self, blobs: BlobCache, concurrency: int, metrics: PrefetchRecorder) -> None:
        self._blobs = blobs
        self._metrics = metrics
        self._turns = asyncio.Semaphore(concurrency)
        self._pending: set[Digest] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Blobs a prefetch committed that no client has read yet (for the metric
        # of prefetches wasted by eviction).
        self._unread: set[Digest] = set()

    def start(self) -> Prefetcher:
        """Hear of every read of a committed blob; returns itself."""
        self._blobs.fills.on_hit = self._unread.discard
        return self

    def evicted(self, digest: Digest) -> None:
        """The evictor removed a blob: count it if a prefetch brought it for nothing."""
        if digest in self._unread:
            self._unread.discard(digest)
            self._metrics.evicted()

    def image(self, name: str, manifest: Manifest, namespace: str | None = None) -> None:
        """Start filling what this image manifest names and this host lacks."""
        if manifest.info.is_index:
            return
        for blob in manifest.info.blobs:
            if blob.urls or blob.digest in self._pending or self._blobs.present(blob.digest):
                continue  # foreign layers live elsewhere; one prefetch per blob; warm: nothing
            self._pending.add(blob.digest)
            task = asyncio.create_task(
                self._prefetch(name, blob.digest, blob.size, namespace),
                name=f"prefetch {blob.digest}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _prefetch(self, name: str, digest: Digest, size: int, namespace: str | None) -> None:
        try:
            async with self._turns:  # a few fills at a time, each until it commits
                fill = await self._blobs.prefetch(name, digest, size, namespace)
                if fill is not None:
                    self._metrics.started()
                    await self._until_committed(fill)
        except (RegistryError, BackendError, FillFailed) as exc:
            log.debug("prefetch of %s for %s stopped: %s", digest, name, exc)
        finally:
            self._pending.discard(digest)

    async def _until_committed(self, fill: Fill) -> None:
        """Wait for the fill to commit (a fill reports its own failure);
        cancelling this wait leaves the fill to its other readers."""
        try:
            await fill.committed()
        finally:
            self._blobs.fills.foreground(fill)
        assert fill.size is not None
        self._metrics.committed(fill.size)
        if not fill.joiners:
            self._unread.add(fill.digest)

    async def settled(self) -> None:
        """Wait until every prefetch started so far has ended (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
