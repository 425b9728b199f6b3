"""Prometheus metrics, one registry per application (no global state).

Label values are drawn from small fixed sets (routes, operations, outcomes);
digests and repository names never become labels. Every labelled series that
the code can produce is created at zero up front, so rates work from the first
scrape. docs/metrics.md describes each metric.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from .requestlog import note_cache, note_sent

__all__ = [
    "CACHE_KINDS",
    "FILL_OUTCOMES",
    "ROUTES",
    "S3_OPERATIONS",
    "BlobMiss",
    "ByteSource",
    "CacheKind",
    "FillOutcome",
    "LeaseEvent",
    "Metrics",
    "OriginKind",
    "PeerDirection",
    "RangeShape",
    "Revalidation",
    "Route",
    "S3Operation",
    "S3Outcome",
    "WrittenKind",
]

Route = Literal[
    "base",
    "manifest",
    "blob",
    "tags",
    "referrers",
    "catalog",
    "upload",
    "warm",
    "metrics",
    "health",
    "ready",
    "other",
]
CacheKind = Literal["blob", "manifest", "tag"]
FillOutcome = Literal["committed", "failed", "digest_mismatch", "absent", "cancelled", "bypassed"]
S3Operation = Literal[
    "GetObject",
    "HeadObject",
    "ListObjectsV2",
    "PutObject",
    "HeadBucket",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "DeleteObject",
    "DeleteObjects",
]
S3Outcome = Literal["ok", "not_found", "refused", "error", "unavailable"]
ByteSource = Literal["disk", "fill", "s3"]  # where the bytes of a blob sent came from
Revalidation = Literal["unchanged", "changed", "removed", "error"]
OriginKind = Literal["blob", "manifest"]
WrittenKind = Literal["blob", "manifest", "tag"]
# What happened to a lease in the bucket (fleet/leases.py).
LeaseEvent = Literal["taken", "followed", "taken_over", "refused"]
PeerDirection = Literal["served", "received"]
# What a request's trace notes for a blob miss: a fill started, or joined.
BlobMiss = Literal["fill", "join"]
# How many ranges a Range request on a blob asked for (after merging), or too many.
RangeShape = Literal["one", "many", "too_many"]

ROUTES: tuple[Route, ...] = get_args(Route)
CACHE_KINDS: tuple[CacheKind, ...] = get_args(CacheKind)
FILL_OUTCOMES: tuple[FillOutcome, ...] = get_args(FillOutcome)
S3_OPERATIONS: tuple[S3Operation, ...] = get_args(S3Operation)
S3_OUTCOMES: tuple[S3Outcome, ...] = get_args(S3Outcome)
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FILL = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_PREFIX = "registry_local_"
_MB = 1e6
_THROUGHPUT_FLOOR = 1 << 20  # smaller fills measure latency, not speed
_THROUGHPUT = tuple(n * _MB for n in (1, 5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200))


class Metrics:
    """Every metric registry-local exports, on a registry of its own."""

    def __init__(self) -> None:
        r = self._registry = CollectorRegistry()
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        p = _PREFIX
        self._http_requests = Counter(
            p + "http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self._http_duration = Histogram(
            p + "http_request_duration_seconds",
            "Time from request to the end of the response, by route and method.",
            ["route", "method"],
            buckets=_LATENCY,
            registry=r,
        )
        self._http_in_flight = Gauge(
            p + "http_requests_in_flight", "Requests being answered now.", registry=r
        )
        self._tasks = Gauge(
            p + "asyncio_tasks",
            "asyncio tasks alive in the server (steady when nothing leaks).",
            registry=r,
        )
        self._http_bytes = Counter(
            p + "http_response_bytes", "Response body bytes sent, by route.", ["route"], registry=r
        )
        self._cache_requests = Counter(
            p + "cache_requests",
            "Lookups answered from this host (hit), needing the backing store (miss), or "
            "answered by a lookup of the backing store another request started (join; "
            "tags and manifests).",
            ["kind", "result"],
            registry=r,
        )
        self._blob_bytes_served = Counter(
            p + "blob_bytes_served",
            "Blob bytes sent to clients: from a committed file (disk), a fill in progress "
            "(fill), or straight from the backing store when the cache had no room (s3).",
            ["source"],
            registry=r,
        )
        self._fills_started = Counter(
            p + "fills_started", "Fills started (one per blob missing on this host).", registry=r
        )
        self._fills_finished = Counter(
            p + "fills_finished", "Fills ended, by outcome.", ["outcome"], registry=r
        )
        self._fill_duration = Histogram(
            p + "fill_duration_seconds",
            "Duration of fills, by outcome.",
            ["outcome"],
            buckets=_FILL,
            registry=r,
        )
        self._fills_in_flight = Gauge(p + "fills_in_flight", "Fills running now.", registry=r)
        self._fill_joins = Counter(
            p + "fill_joins",
            "Requests served by joining a fill that another request started.",
            registry=r,
        )
        self._fill_retries = Counter(
            p + "fill_retries", "Times a fill resumed its read from the backing store.", registry=r
        )
        self._fill_bytes = Counter(
            p + "fill_bytes", "Bytes written into the cache by fills.", registry=r
        )
        self._use_records = Counter(
            p + "use_records",
            "Uses of manifests noted in the bucket (for gc), by outcome.",
            ["outcome"],
            registry=r,
        )
        self._fill_repeats = Counter(
            p + "fill_repeats",
            "Fills committed of a blob this process had filled before (evicted, or wiped).",
            registry=r,
        )
        self._fill_repeated_bytes = Counter(
            p + "fill_repeated_bytes",
            "Bytes of those fills: blob bytes that crossed the link to the cache again.",
            registry=r,
        )
        self._origin_fetches = Counter(
            p + "origin_fetches",
            "Blobs (fills started) and manifests fetched from an origin registry (--upstream).",
            ["kind"],
            registry=r,
        )
        self._origin_written = Counter(
            p + "origin_written",
            "Blobs, manifests and tags from an origin written through to the bucket.",
            ["kind"],
            registry=r,
        )
        self._origin_write_failures = Counter(
            p + "origin_write_failures",
            "Write-throughs to the bucket that failed (the content is still served here).",
            registry=r,
        )
        self._fill_parts = Counter(
            p + "fill_parts",
            "Reads of fills that reached their end: each part of a blob read in parts "
            "(see --s3-part-size), or each piece read first for a waiting range.",
            registry=r,
        )
        self._fill_demand_reads = Counter(
            p + "fill_demand_reads",
            "Reads a fill started for bytes a waiting range reader asked for, before the "
            "rest of the blob (lazy pullers: footers, tables of contents, chunks).",
            registry=r,
        )
        self._range_requests = Counter(
            p + "blob_range_requests",
            "Range requests on blobs: one range, several (multipart/byteranges), or more "
            "than the bound (refused with 400).",
            ["ranges"],
            registry=r,
        )
        self._range_unverified = Counter(
            p + "range_bytes_unverified",
            "Bytes of ranges served from fills before the blob's digest was checked "
            "(as the backing store holds them; --verified-ranges waits instead).",
            registry=r,
        )
        self._range_discarded = Counter(
            p + "range_bytes_discarded",
            "Bytes of ranges served from fills whose blob then failed its digest check "
            "and was discarded.",
            registry=r,
        )
        self._origin_range_ignored = Counter(
            p + "origin_range_ignored",
            "Fills from an origin registry that answered a range with the whole blob: "
            "read in order only, so a range waits for the bytes before it.",
            registry=r,
        )
        self._fill_part_retries = Counter(
            p + "fill_part_retries",
            "Times a part of a ranged fill resumed its read (also counted in fill_retries).",
            registry=r,
        )
        self._fill_throughput = Histogram(
            p + "fill_throughput_bytes_per_second",
            "Effective speed of committed fills of 1 MiB or more: size over the whole "
            "fill's duration, waits for room and S3 slots included.",
            buckets=_THROUGHPUT,
            registry=r,
        )
        self._s3_requests = Counter(
            p + "s3_requests",
            "Requests to S3, by operation and outcome.",
            ["operation", "outcome"],
            registry=r,
        )
        self._s3_duration = Histogram(
            p + "s3_request_duration_seconds",
            "Time to the response headers of S3 requests, by operation.",
            ["operation"],
            buckets=_LATENCY,
            registry=r,
        )
        self._s3_retries = Counter(
            p + "s3_retries",
            "S3 requests made again after a failure a retry may fix.",
            ["operation"],
            registry=r,
        )
        self._s3_circuit_state = Gauge(
            p + "s3_circuit_state",
            "The S3 circuit breaker: 0 closed (normal), 1 half-open (probing), 2 open "
            "(S3 keeps failing: calls fail at once).",
            registry=r,
        )
        self._s3_circuit_opened = Counter(
            p + "s3_circuit_opened", "Times the S3 circuit breaker opened.", registry=r
        )
        self._s3_blob_reads = Counter(
            p + "s3_blob_reads",
            "Blob body reads from S3 (fills, each part of a ranged fill, uncached reads "
            "and resumes).",
            registry=r,
        )
        self._s3_slots = Gauge(
            p + "s3_blob_reads_active",
            "Blob bodies being read from S3 now (at most --s3-max-concurrency).",
            registry=r,
        )
        self._s3_slot_waiters = Gauge(
            p + "s3_blob_reads_queued",
            "Blob reads waiting for a free S3 slot, served fill by fill in turn.",
            registry=r,
        )
        self._s3_read_bytes = Counter(
            p + "s3_read_bytes", "Bytes read from S3 object bodies.", registry=r
        )
        self._s3_written_bytes = Counter(p + "s3_written_bytes", "Bytes written to S3.", registry=r)
        self._tag_revalidations = Counter(
            p + "tag_revalidations",
            "Tag lookups in the backing store after the tag TTL ran out, by outcome.",
            ["outcome"],
            registry=r,
        )
        self._stale_served = Counter(
            p + "stale_served",
            "Answers given from the last known state because the backing store failed.",
            ["kind"],
            registry=r,
        )
        self._ready = Gauge(
            p + "ready",
            "1 when the cache dir takes writes and the backing store answers.",
            registry=r,
        )
        self._disk_used = Gauge(
            p + "disk_used_bytes",
            "Bytes of committed blobs and manifests in the cache dir.",
            registry=r,
        )
        self._cache_limit = Gauge(
            p + "cache_limit_bytes",
            "The cache's size limit (--cache-max-bytes); 0: none.",
            registry=r,
        )
        self._cache_writable = Gauge(
            p + "cache_writable",
            "1 while new blobs are cached; 0 while they are streamed without caching "
            "(disk full, or the limit cannot be met).",
            registry=r,
        )
        self._cache_bypass = Counter(
            p + "cache_bypass",
            "Blob requests answered from the backing store without caching (no room).",
            registry=r,
        )
        self._leases = Counter(
            p + "fleet_leases",
            "Leases in the bucket: taken (this host reads for the fleet), followed "
            "(another host does), taken over (its holder died), refused (lost a race "
            "to renew or take over).",
            ["event"],
            registry=r,
        )
        self._peer_bytes = Counter(
            p + "peer_bytes",
            "Blob bytes sent to (served) and read from (received) other hosts of the fleet.",
            ["direction"],
            registry=r,
        )
        self._fleet_staged = Counter(
            p + "fleet_staged_bytes",
            "Blob bytes staged in the bucket part by part while this host filled them as "
            "a lease holder (staged), and read from parts another host staged (read).",
            ["direction"],
            registry=r,
        )
        self._fleet_peer_busy = Counter(
            p + "fleet_peer_busy",
            "Times a follower found the lease holder streaming to --peer-max-streams "
            "others already, and read the staged parts from the bucket instead.",
            registry=r,
        )
        self._peer_streams = Gauge(
            p + "peer_streams",
            "Blob streams this host serves other hosts of the fleet now "
            "(at most --peer-max-streams).",
            registry=r,
        )
        self._peer_refused = Counter(
            p + "peer_streams_refused",
            "Peer blob requests this host answered 503 because it already streamed to "
            "--peer-max-streams others (they read the staged parts instead).",
            registry=r,
        )
        self._fleet_fallbacks = Counter(
            p + "fleet_bucket_fallbacks",
            "Times a follower could not stream from the lease holder and waited for "
            "the bucket instead.",
            registry=r,
        )
        self._fleet_coordination = Gauge(
            p + "fleet_coordination",
            "1 while this host coordinates origin reads with the fleet through the "
            "bucket; 0 when it is off or the backing store refuses conditional writes.",
            registry=r,
        )
        self._prefetches = Counter(
            p + "prefetches",
            "Blobs an image manifest named that started filling before a client asked "
            "(started), or did not for lack of room (skipped).",
            ["outcome"],
            registry=r,
        )
        self._prefetch_bytes = Counter(
            p + "prefetch_bytes", "Bytes of blobs prefetched into the cache.", registry=r
        )
        self._prefetch_evicted_unread = Counter(
            p + "prefetch_evicted_unread",
            "Prefetched blobs evicted before any client read them (prefetch wasted).",
            registry=r,
        )
        self._evictions = Counter(
            p + "evictions", "Blobs (or manifests) evicted to stay within the limit.", registry=r
        )
        self._evicted_bytes = Counter(
            p + "evicted_bytes", "Bytes evicted to stay within the limit.", registry=r
        )
        self._disk_free = Gauge(
            p + "disk_free_bytes", "Bytes free on the cache dir's filesystem.", registry=r
        )
        self._disk_size = Gauge(
            p + "disk_size_bytes", "Size of the cache dir's filesystem.", registry=r
        )
        ProcessCollector(registry=r)
        self._hits = {kind: self._cache_requests.labels(kind, "hit") for kind in CACHE_KINDS}
        self._misses = {kind: self._cache_requests.labels(kind, "miss") for kind in CACHE_KINDS}
        self._zero()

    def _zero(self) -> None:
        for kind in CACHE_KINDS:
            for result in ("hit", "miss", "join") if kind != "blob" else ("hit", "miss"):
                self._cache_requests.labels(kind, result)
        for source in get_args(ByteSource):
            self._blob_bytes_served.labels(source)
        for outcome in FILL_OUTCOMES:
            self._fills_finished.labels(outcome)
            self._fill_duration.labels(outcome)
        for operation in S3_OPERATIONS:
            self._s3_duration.labels(operation)
            self._s3_retries.labels(operation)
            for s3_outcome in S3_OUTCOMES:
                self._s3_requests.labels(operation, s3_outcome)
        for revalidation in get_args(Revalidation):
            self._tag_revalidations.labels(revalidation)
        for kind in CACHE_KINDS:
            self._stale_served.labels(kind)
        for kind in get_args(OriginKind):
            self._origin_fetches.labels(kind)
        for written in ("written", "failed"):
            self._use_records.labels(written)
        for prefetch in ("started", "skipped"):
            self._prefetches.labels(prefetch)
        for event in get_args(LeaseEvent):
            self._leases.labels(event)
        for direction in get_args(PeerDirection):
            self._peer_bytes.labels(direction)
        for staged in ("staged", "read"):
            self._fleet_staged.labels(staged)
        for kind in get_args(WrittenKind):
            self._origin_written.labels(kind)
        for shape in get_args(RangeShape):
            self._range_requests.labels(shape)
        for route in ROUTES:
            self._http_bytes.labels(route)
            for method in ("GET", "HEAD"):
                self._http_requests.labels(route, method, "200")
                self._http_duration.labels(route, method)

    # -- what happened, recorded by intent (each also noted on the request's trace)

    def cache_hit(self, kind: CacheKind) -> None:
        self._hits[kind].inc()
        note_cache(kind, "hit")

    def cache_miss(self, kind: CacheKind, joined: bool = False) -> None:
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

    def blob_bytes_sent(self, source: ByteSource, count: int, *, by_sendfile: bool) -> None:
        """Blob body bytes sent to a client; `by_sendfile`: outside aiohttp's writer,
        so the request's trace counts them here."""
        self._blob_bytes_served.labels(source).inc(count)
        if by_sendfile:
            note_sent(count)

    def fill_wrote(self, count: int) -> None:
        """A fill wrote `count` more bytes of a blob into the cache."""
        self._fill_bytes.inc(count)

    def use_recorded(self, written: bool) -> None:
        """A served manifest's use noted in the bucket, or the write failed."""
        self._use_records.labels("written" if written else "failed").inc()

    def fill_repeated(self, size: int) -> None:
        """A fill committed a blob of `size` bytes this process had filled before."""
        self._fill_repeats.inc()
        self._fill_repeated_bytes.inc(size)

    def fill_part_read(self) -> None:
        """A read of a fill (a part, or a piece) reached its end."""
        self._fill_parts.inc()

    def fill_demand_read(self) -> None:
        """A fill started a read for bytes a range reader waits for."""
        self._fill_demand_reads.inc()

    def range_request(self, shape: RangeShape) -> None:
        self._range_requests.labels(shape).inc()

    def range_bytes_unverified(self, count: int) -> None:
        """Range bytes served from a fill before its digest was checked."""
        self._range_unverified.inc(count)

    def range_bytes_discarded(self, count: int) -> None:
        """A fill that had served `count` range bytes failed its digest check."""
        self._range_discarded.inc(count)

    def origin_range_ignored(self) -> None:
        """A fill's origin answered a range with the whole blob."""
        self._origin_range_ignored.inc()

    def fill_resumed(self, *, part: bool) -> None:
        """A read of a blob from the backing store resumed after a break; `part`:
        a part of a ranged fill (counted in both)."""
        self._fill_retries.inc()
        if part:
            self._fill_part_retries.inc()

    def fill_started(self) -> None:
        self._fills_started.inc()
        self._fills_in_flight.inc()

    def fill_finished(self, outcome: FillOutcome, seconds: float, size: int) -> None:
        self._fills_in_flight.dec()
        self._fills_finished.labels(outcome).inc()
        self._fill_duration.labels(outcome).observe(seconds)
        if outcome == "committed" and size >= _THROUGHPUT_FLOOR and seconds > 0:
            self._fill_throughput.observe(size / seconds)

    def origin_fetched(self, kind: OriginKind) -> None:
        """A blob or manifest asked of an origin registry (a fill or a fetch started)."""
        self._origin_fetches.labels(kind).inc()

    def origin_written_through(self, kind: WrittenKind) -> None:
        """Something from an origin registry written through to the bucket."""
        self._origin_written.labels(kind).inc()

    def origin_write_failed(self) -> None:
        """A write-through to the bucket failed (the content is still served here)."""
        self._origin_write_failures.inc()

    def prefetch_started(self) -> None:
        self._prefetches.labels("started").inc()

    def prefetch_skipped(self) -> None:
        self._prefetches.labels("skipped").inc()

    def prefetch_committed(self, size: int) -> None:
        """A prefetch brought a blob of `size` bytes into the cache."""
        self._prefetch_bytes.inc(size)

    def prefetch_evicted(self) -> None:
        """A prefetched blob was evicted before any client read it."""
        self._prefetch_evicted_unread.inc()

    def lease(self, event: LeaseEvent) -> None:
        self._leases.labels(event).inc()

    def peer_bytes(self, direction: PeerDirection, count: int) -> None:
        self._peer_bytes.labels(direction).inc(count)

    def fleet_staged_read(self, count: int) -> None:
        """Bytes of a part another host staged, read from the bucket."""
        self._fleet_staged.labels("read").inc(count)

    def fleet_staged(self, count: int) -> None:
        """Bytes this host, as a lease holder, staged in the bucket."""
        self._fleet_staged.labels("staged").inc(count)

    def fleet_peer_busy(self) -> None:
        """The holder had no peer stream to spare: its staged parts instead."""
        self._fleet_peer_busy.inc()

    def peer_stream(self, change: int) -> None:
        """A peer's blob stream from this host began (+1) or ended (-1)."""
        self._peer_streams.inc(change)

    def peer_refused(self) -> None:
        """A peer asked for a stream when none was to spare."""
        self._peer_refused.inc()

    def fleet_fell_back(self) -> None:
        """A follower could not stream from the lease holder: it waits for the bucket."""
        self._fleet_fallbacks.inc()

    def fleet_coordinating(self, on: bool) -> None:
        """Whether this host coordinates origin reads with the fleet."""
        self._fleet_coordination.set(1 if on else 0)

    def s3_request(self, operation: S3Operation, outcome: S3Outcome, seconds: float) -> None:
        self._s3_requests.labels(operation, outcome).inc()
        self._s3_duration.labels(operation).observe(seconds)

    def s3_retry(self, operation: S3Operation) -> None:
        self._s3_retries.labels(operation).inc()

    def s3_bytes(self, *, read: int = 0, written: int = 0) -> None:
        """Bytes of object bodies read from or written to S3."""
        if read:
            self._s3_read_bytes.inc(read)
        if written:
            self._s3_written_bytes.inc(written)

    def s3_circuit(self, state: int, *, opened: bool) -> None:
        """The circuit breaker is in `state` (0 closed, 1 half-open, 2 open);
        `opened`: it has just opened."""
        self._s3_circuit_state.set(state)
        if opened:
            self._s3_circuit_opened.inc()

    def s3_slots(self, held: int, waiting: int) -> None:
        """Blob reads from S3 now under way, and waiting for a slot."""
        self._s3_slots.set(held)
        self._s3_slot_waiters.set(waiting)

    def s3_blob_read(self) -> None:
        """A blob body read from S3 begins (it holds a slot)."""
        self._s3_blob_reads.inc()

    def cache_state(self, *, limit: int | None = None, writable: bool) -> None:
        """Whether new blobs are cached (False: streamed without caching), and
        the cache's size limit when it is set (0: none)."""
        if limit is not None:
            self._cache_limit.set(limit)
        self._cache_writable.set(1 if writable else 0)

    def evicted(self, size: int) -> None:
        """A blob (or manifest) of `size` bytes was evicted to stay within the limit."""
        self._evictions.inc()
        self._evicted_bytes.inc(size)

    def readiness(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def count_request(
        self, route: Route, method: str, status: int, seconds: float, sent: int
    ) -> None:
        """One answered request. The labelled children are looked up once and kept:
        prometheus-client's labels() is costly on every request."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self._http_requests.labels(route, method, str(status)),
                self._http_duration.labels(route, method),
                self._http_bytes.labels(route),
            )
            self._request_children[key] = children
        requests, duration, sent_bytes = children
        requests.inc()
        duration.observe(seconds)
        sent_bytes.inc(sent)

    def track_server(self, in_flight: Callable[[], int]) -> None:
        """Read the request and task gauges at each scrape."""
        self._http_in_flight.set_function(lambda: float(in_flight()))
        self._tasks.set_function(_task_count)

    def track_disk(self, used: Callable[[], float], directory: Path) -> None:
        """Read the disk gauges at each scrape: `used()`, and the filesystem's space."""
        self._disk_used.set_function(used)
        self._disk_free.set_function(lambda: _statvfs(directory, free=True))
        self._disk_size.set_function(lambda: _statvfs(directory, free=False))

    def exposition(self) -> bytes:
        return generate_latest(self._registry)

    def sample(self, name: str, **labels: str) -> float:
        """One sample's value, by its exposed name with or without the
        `registry_local_` prefix and a counter's `_total` (0 if absent)."""
        full = name if name.startswith(_PREFIX) else _PREFIX + name
        for candidate in (full, full + "_total"):
            value = self._registry.get_sample_value(candidate, labels)
            if value is not None:
                return value
        return 0.0


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # no event loop here
        return float("nan")


def _statvfs(directory: Path, *, free: bool) -> float:
    try:
        st = os.statvfs(directory)
    except OSError:
        return float("nan")
    return float((st.f_bavail if free else st.f_blocks) * st.f_frsize)
