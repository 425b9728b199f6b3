"""This host's cache: lookups (hits, misses, joins, stale answers, tag
revalidations), the cache dir's room (use, limit, evictions, the filesystem),
and readiness."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..requestlog import note_cache
from .shared import PREFIX

__all__ = [
    "CACHE_KINDS",
    "BlobMiss",
    "CacheKind",
    "DiskRecorder",
    "LookupRecorder",
    "ReadinessRecorder",
    "Revalidation",
]

CacheKind = Literal["blob", "manifest", "tag"]
# What a request's trace notes for a blob miss: a fill started, or joined.
BlobMiss = Literal["fill", "join"]
Revalidation = Literal["unchanged", "changed", "removed", "error"]

CACHE_KINDS: tuple[CacheKind, ...] = get_args(CacheKind)


class LookupRecorder:
    """Lookups of blobs, manifests and tags on this host, each also noted on the
    request's trace: hits, misses, joins, bypasses, stale answers, revalidations."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._cache_requests = Counter(
            PREFIX + "cache_requests",
            "Lookups answered from this host (hit), needing the backing store (miss), or "
            "answered by a lookup of the backing store another request started (join; "
            "tags and manifests).",
            ["kind", "result"],
            registry=r,
        )
        self._fill_joins = Counter(
            PREFIX + "fill_joins",
            "Requests served by joining a fill that another request started.",
            registry=r,
        )
        self._tag_revalidations = Counter(
            PREFIX + "tag_revalidations",
            "Tag lookups in the backing store after the tag TTL ran out, by outcome.",
            ["outcome"],
            registry=r,
        )
        self._stale_served = Counter(
            PREFIX + "stale_served",
            "Answers given from the last known state because the backing store failed.",
            ["kind"],
            registry=r,
        )
        self._cache_bypass = Counter(
            PREFIX + "cache_bypass",
            "Blob requests answered from the backing store without caching (no room).",
            registry=r,
        )
        self._hits = {kind: self._cache_requests.labels(kind, "hit") for kind in CACHE_KINDS}
        self._misses = {kind: self._cache_requests.labels(kind, "miss") for kind in CACHE_KINDS}
        for kind in CACHE_KINDS:
            for result in ("hit", "miss", "join") if kind != "blob" else ("hit", "miss"):
                self._cache_requests.labels(kind, result)
        for revalidation in get_args(Revalidation):
            self._tag_revalidations.labels(revalidation)
        for kind in CACHE_KINDS:
            self._stale_served.labels(kind)

    def hit(self, kind: CacheKind) -> None:
        self._hits[kind].inc()
        note_cache(kind, "hit")

    def miss(self, kind: CacheKind, joined: bool = False) -> None:
        """Not on this host; `joined`: another request's lookup is under way and
        answers this one too (the backing store is asked once)."""
        if joined:
            self._cache_requests.labels(kind, "join").inc()
            note_cache(kind, "join")
            return
        self._misses[kind].inc()
        note_cache(kind, "miss")

    def blob_miss(self, then: BlobMiss | None) -> None:
        """A blob not on this host; `then` a fill was started or joined for it
        (None: the cache had no room to start one)."""
        self._misses["blob"].inc()
        if then == "join":
            self._fill_joins.inc()
        if then is not None:
            note_cache("blob", then)

    def blob_bypassed(self) -> None:
        """A blob served straight from the backing store: no room in the cache."""
        self._cache_bypass.inc()
        note_cache("blob", "bypass")

    def stale_served(self, kind: CacheKind) -> None:
        """The last known answer served because the backing store or origin failed."""
        self._stale_served.labels(kind).inc()
        note_cache(kind, "stale")

    def tag_revalidated(self, outcome: Revalidation) -> None:
        self._tag_revalidations.labels(outcome).inc()


class DiskRecorder:
    """The cache dir's room: bytes used against the limit, whether new blobs are
    cached, evictions, and the filesystem's free and total space."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._disk_used = Gauge(
            PREFIX + "disk_used_bytes",
            "Bytes of committed blobs and manifests in the cache dir.",
            registry=r,
        )
        self._cache_limit = Gauge(
            PREFIX + "cache_limit_bytes",
            "The cache's size limit (--cache-max-bytes); 0: none.",
            registry=r,
        )
        self._cache_writable = Gauge(
            PREFIX + "cache_writable",
            "1 while new blobs are cached; 0 while they are streamed without caching "
            "(disk full, or the limit cannot be met).",
            registry=r,
        )
        self._evictions = Counter(
            PREFIX + "evictions",
            "Blobs (or manifests) evicted to stay within the limit.",
            registry=r,
        )
        self._evicted_bytes = Counter(
            PREFIX + "evicted_bytes", "Bytes evicted to stay within the limit.", registry=r
        )
        self._disk_free = Gauge(
            PREFIX + "disk_free_bytes", "Bytes free on the cache dir's filesystem.", registry=r
        )
        self._disk_size = Gauge(
            PREFIX + "disk_size_bytes", "Size of the cache dir's filesystem.", registry=r
        )

    def state(self, *, limit: int | None = None, writable: bool) -> None:
        """Whether new blobs are cached (False: streamed without caching), and
        the cache's size limit when it is set (0: none)."""
        if limit is not None:
            self._cache_limit.set(limit)
        self._cache_writable.set(1 if writable else 0)

    def evicted(self, size: int) -> None:
        """A blob (or manifest) of `size` bytes was evicted to stay within the limit."""
        self._evictions.inc()
        self._evicted_bytes.inc(size)

    def track(self, used: Callable[[], float], directory: Path) -> None:
        """Read the disk gauges at each scrape: `used()`, and the filesystem's space."""
        self._disk_used.set_function(used)
        self._disk_free.set_function(lambda: _statvfs(directory, free=True))
        self._disk_size.set_function(lambda: _statvfs(directory, free=False))


class ReadinessRecorder:
    """Whether this host is ready: its cache dir takes writes and its backing
    store answers (what /readyz last found)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._ready = Gauge(
            PREFIX + "ready",
            "1 when the cache dir takes writes and the backing store answers.",
            registry=registry,
        )

    def checked(self, ready: bool) -> None:
        """What the last readiness probe found."""
        self._ready.set(1 if ready else 0)


def _statvfs(directory: Path, *, free: bool) -> float:
    try:
        st = os.statvfs(directory)
    except OSError:
        return float("nan")
    return float((st.f_bavail if free else st.f_blocks) * st.f_frsize)
