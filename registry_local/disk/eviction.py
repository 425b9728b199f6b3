"""Keeping the cache dir within its limit, and what to do when the disk is full.

With a limit, blobs are evicted least recently used first: in the background
once usage passes the high watermark (95% of the limit), down to the low one
(85%), and at once when a fill needs room. Pinned blobs (being read or written)
are never evicted; manifests only when blobs alone cannot make room.

The cache also leaves a floor of free space on its filesystem (64 MiB, or 5% of
a small one). When a fill cannot get room, or the disk says ENOSPC, the cache
stops taking new blobs: requests are answered by streaming from the backing
store without caching (bypass), and caching resumes by itself once the blob
that did not fit would fit.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..oci.digest import Digest
from ..telemetry.metrics import DiskRecorder
from .store import DiskStore

__all__ = ["CacheLimit", "Evictor"]

log = logging.getLogger(__name__)

HIGH_WATERMARK = 0.95
LOW_WATERMARK = 0.85
# Free space the filesystem must keep beyond what a blob takes, so that the
# cache never fills the disk to the last byte: 64 MiB, or 5% of a small disk.
RESERVE_BYTES = 64 << 20
RESERVE_SHARE = 0.05


@dataclass(frozen=True)
class CacheLimit:
    """At most `size` bytes, or `share` of the cache dir's filesystem (0: no limit)."""

    size: int = 0
    share: float = 0.0

    def bytes_for(self, directory: Path) -> int | None:
        if self.share:
            st = os.statvfs(directory)
            return int(st.f_blocks * st.f_frsize * self.share)
        return self.size or None


class Evictor:
    """Keeps the cache dir within its limit and its filesystem's free-space floor,
    and says when the cache must stop taking blobs; see the module docstring."""

    def __init__(self, disk: DiskStore, limit: int | None, metrics: DiskRecorder) -> None:
        self.on_evict: Callable[[Digest], None] = lambda digest: None  # told of each eviction
        self._disk = disk
        self.limit = limit
        self._metrics = metrics
        self._reserved = 0
        self._needed = 0  # size of the blob that found the disk full
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.writable = True
        metrics.state(limit=limit or 0, writable=True)

    # -- admission -------------------------------------------------------------------

    async def can_cache(self) -> bool:
        """Whether new blobs may be cached now (checks for recovery when not)."""
        return self.writable or await self._recovered()

    def could_hold(self, size: int) -> bool:
        """Whether a blob of `size` bytes fits within the limit at all."""
        return self.limit is None or size <= self.limit

    async def reserve(self, size: int) -> bool:
        """Room for a new blob of `size` bytes; False: serve it without caching."""
        if not self.writable and not await self._recovered():
            return False
        if self.limit is not None:
            if self._disk.bytes_used + self._reserved + size > self.limit:
                await self.evict_to(self.limit - self._reserved - size)
            if self._disk.bytes_used + self._reserved + size > self.limit:
                self._stop_caching("the cache limit cannot be met: everything left is in use")
                return False
        free, floor = await asyncio.to_thread(_space, self._disk.layout.root)
        if free - self._reserved - size < floor:
            self.disk_full(size)
            return False
        self._reserved += size
        return True

    def release(self, size: int) -> None:
        """A reservation ended (committed: now counted as used, or abandoned)."""
        self._reserved = max(0, self._reserved - size)
        if self.limit is not None and self._disk.bytes_used > self.limit * HIGH_WATERMARK:
            self._wake.set()

    def disk_full(self, needed: int) -> None:
        """The disk cannot take a blob of `needed` bytes (or a write said ENOSPC)."""
        self._needed = max(self._needed, needed)
        self._stop_caching("the cache filesystem is full")

    def _stop_caching(self, why: str) -> None:
        if self.writable:
            log.warning(
                "not caching new blobs: %s; serving them straight from the "
                "backing store until there is room",
                why,
            )
        self.writable = False
        self._metrics.state(writable=False)
        self._wake.set()

    async def _recovered(self) -> bool:
        free, floor = await asyncio.to_thread(_space, self._disk.layout.root)
        under_limit = self.limit is None or self._disk.bytes_used < self.limit * LOW_WATERMARK
        if free - self._reserved >= self._needed + floor and under_limit:
            self.writable = True
            self._needed = 0
            self._metrics.state(writable=True)
            log.info("caching new blobs again: %d bytes free", free)
        return self.writable

    # -- eviction -----------------------------------------------------------------------

    async def evict_to(self, target: int) -> int:
        """Evict least recently used blobs until usage is at most `target`; bytes freed."""
        async with self._lock:
            freed = 0
            for manifests in (False, True):  # manifests only if blobs do not suffice
                if self._disk.bytes_used <= target:
                    break
                candidates = sorted(
                    (
                        (e.accessed, d)
                        for d, e in self._disk.entries()
                        if e.manifest == manifests and not self._disk.pinned(d)
                    ),
                    key=lambda pair: pair[0],
                )
                for _, digest in candidates:
                    if self._disk.bytes_used <= target:
                        break
                    removed = await self._disk.remove(digest)
                    if removed:
                        self.on_evict(digest)
                        freed += removed
                        self._metrics.evicted(removed)
            if freed:
                log.info("evicted %d bytes; %d in use", freed, self._disk.bytes_used)
            return freed

    async def run(self, reconcile_every: float = 600.0) -> None:
        """The background task: watermarks, recovery from a full disk, rescans."""
        loop = asyncio.get_running_loop()
        last_rescan = loop.time()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=10.0)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if self.limit is not None and self._disk.bytes_used > self.limit * HIGH_WATERMARK:
                    await self.evict_to(int(self.limit * LOW_WATERMARK))
                if not self.writable:
                    await self._recovered()
                if loop.time() - last_rescan > reconcile_every:
                    last_rescan = loop.time()
                    await self._disk.reconcile()
            except OSError as exc:
                log.warning("cache maintenance failed: %s", exc)


def _space(directory: Path) -> tuple[int, int]:
    """Free bytes on the filesystem, and the floor the cache leaves free."""
    st = os.statvfs(directory)
    floor = min(RESERVE_BYTES, int(st.f_blocks * st.f_frsize * RESERVE_SHARE))
    return st.f_bavail * st.f_frsize, floor
