"""Prometheus metrics, one registry per application (no global state).

`Metrics` owns the registry and one recorder per concern over it; each
component is handed only the recorder(s) it records to:

    requests   RequestRecorder    server: requests, blob bytes sent, Range shapes
    lookups    LookupRecorder     hits, misses, joins, stale answers, tag revalidations
    disk       DiskRecorder       the cache dir: use, limit, evictions, free space
    readiness  ReadinessRecorder  the /readyz check
    fills      FillRecorder       fills: outcomes, bytes, reads, resumes, range bytes
    prefetch   PrefetchRecorder   blobs filled before a client asked
    origin     OriginRecorder     origin registries and write-through to the bucket
    retention  RetentionRecorder  use records for gc
    fleet      FleetRecorder      leases, peer streams, staged parts
    s3         S3Recorder         S3 requests, bytes, the circuit breaker, read slots
    access     AccessRecorder     access decisions, origin checks, policy reloads

Label values are drawn from small fixed sets (routes, operations, outcomes);
digests and repository names never become labels. Every labelled series that
the code can produce is created at zero up front, so rates work from the first
scrape. docs/metrics.md describes each metric.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from .access import AccessRecorder, AccessVerdict, DecidedBy
from .cache import (
    CACHE_KINDS,
    BlobMiss,
    CacheKind,
    DiskRecorder,
    LookupRecorder,
    ReadinessRecorder,
    Revalidation,
)
from .fills import FILL_OUTCOMES, FillOutcome, FillRecorder, PrefetchRecorder
from .fleet import FleetRecorder, LeaseEvent, PeerDirection
from .origin import OriginKind, OriginRecorder, WrittenKind
from .requests import ROUTES, ByteSource, RangeShape, RequestRecorder, Route
from .retention import RetentionRecorder
from .s3 import S3_OPERATIONS, S3Operation, S3Outcome, S3Recorder
from .shared import PREFIX

__all__ = [
    "CACHE_KINDS",
    "FILL_OUTCOMES",
    "ROUTES",
    "S3_OPERATIONS",
    "AccessRecorder",
    "AccessVerdict",
    "BlobMiss",
    "ByteSource",
    "CacheKind",
    "DecidedBy",
    "DiskRecorder",
    "FillOutcome",
    "FillRecorder",
    "FleetRecorder",
    "LeaseEvent",
    "LookupRecorder",
    "Metrics",
    "OriginKind",
    "OriginRecorder",
    "PeerDirection",
    "PrefetchRecorder",
    "RangeShape",
    "ReadinessRecorder",
    "RequestRecorder",
    "RetentionRecorder",
    "Revalidation",
    "Route",
    "S3Operation",
    "S3Outcome",
    "S3Recorder",
    "WrittenKind",
]


class Metrics:
    """Every metric registry-local exports, on a registry of its own: one
    recorder per concern, and the exposition of them all."""

    def __init__(self) -> None:
        r = self._registry = CollectorRegistry()
        self.requests = RequestRecorder(r)
        self.lookups = LookupRecorder(r)
        self.disk = DiskRecorder(r)
        self.readiness = ReadinessRecorder(r)
        self.fills = FillRecorder(r)
        self.prefetch = PrefetchRecorder(r)
        self.origin = OriginRecorder(r)
        self.retention = RetentionRecorder(r)
        self.fleet = FleetRecorder(r)
        self.s3 = S3Recorder(r)
        self.access = AccessRecorder(r)
        ProcessCollector(registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self._registry)

    def sample(self, name: str, **labels: str) -> float:
        """One sample's value, by its exposed name with or without the
        `registry_local_` prefix and a counter's `_total` (0 if absent)."""
        full = name if name.startswith(PREFIX) else PREFIX + name
        for candidate in (full, full + "_total"):
            value = self._registry.get_sample_value(candidate, labels)
            if value is not None:
                return value
        return 0.0
