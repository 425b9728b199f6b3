"""Fills: their starts, outcomes, durations and speed, the bytes they wrote, the
reads they made (parts, reads for waiting ranges, resumes), the range bytes
they served before their digest was checked; and prefetches, the fills started
before a client asked."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .shared import PREFIX

__all__ = ["FILL_OUTCOMES", "FillOutcome", "FillRecorder", "PrefetchRecorder"]

FillOutcome = Literal["committed", "failed", "digest_mismatch", "absent", "cancelled", "bypassed"]

FILL_OUTCOMES: tuple[FillOutcome, ...] = get_args(FillOutcome)
_FILL = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_MB = 1e6
_THROUGHPUT_FLOOR = 1 << 20  # smaller fills measure latency, not speed
_THROUGHPUT = tuple(n * _MB for n in (1, 5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200))


class FillRecorder:
    """What fills did: started, finished (by outcome, timed), wrote, read again,
    resumed, and the range bytes they served unverified or discarded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._fills_started = Counter(
            PREFIX + "fills_started",
            "Fills started (one per blob missing on this host).",
            registry=r,
        )
        self._fills_finished = Counter(
            PREFIX + "fills_finished", "Fills ended, by outcome.", ["outcome"], registry=r
        )
        self._fill_duration = Histogram(
            PREFIX + "fill_duration_seconds",
            "Duration of fills, by outcome.",
            ["outcome"],
            buckets=_FILL,
            registry=r,
        )
        self._fills_in_flight = Gauge(PREFIX + "fills_in_flight", "Fills running now.", registry=r)
        self._fill_retries = Counter(
            PREFIX + "fill_retries",
            "Times a fill resumed its read from the backing store.",
            registry=r,
        )
        self._fill_bytes = Counter(
            PREFIX + "fill_bytes", "Bytes written into the cache by fills.", registry=r
        )
        self._fill_repeats = Counter(
            PREFIX + "fill_repeats",
            "Fills committed of a blob this process had filled before (evicted, or wiped).",
            registry=r,
        )
        self._fill_repeated_bytes = Counter(
            PREFIX + "fill_repeated_bytes",
            "Bytes of those fills: blob bytes that crossed the link to the cache again.",
            registry=r,
        )
        self._fill_parts = Counter(
            PREFIX + "fill_parts",
            "Reads of fills that reached their end: each part of a blob read in parts "
            "(see --s3-part-size), or each piece read first for a waiting range.",
            registry=r,
        )
        self._fill_demand_reads = Counter(
            PREFIX + "fill_demand_reads",
            "Reads a fill started for bytes a waiting range reader asked for, before the "
            "rest of the blob (lazy pullers: footers, tables of contents, chunks).",
            registry=r,
        )
        self._range_unverified = Counter(
            PREFIX + "range_bytes_unverified",
            "Bytes of ranges served from fills before the blob's digest was checked "
            "(as the backing store holds them; --verified-ranges waits instead).",
            registry=r,
        )
        self._range_discarded = Counter(
            PREFIX + "range_bytes_discarded",
            "Bytes of ranges served from fills whose blob then failed its digest check "
            "and was discarded.",
            registry=r,
        )
        self._fill_part_retries = Counter(
            PREFIX + "fill_part_retries",
            "Times a part of a ranged fill resumed its read (also counted in fill_retries).",
            registry=r,
        )
        self._fill_throughput = Histogram(
            PREFIX + "fill_throughput_bytes_per_second",
            "Effective speed of committed fills of 1 MiB or more: size over the whole "
            "fill's duration, waits for room and S3 slots included.",
            buckets=_THROUGHPUT,
            registry=r,
        )
        for outcome in FILL_OUTCOMES:
            self._fills_finished.labels(outcome)
            self._fill_duration.labels(outcome)

    def started(self) -> None:
        self._fills_started.inc()
        self._fills_in_flight.inc()

    def finished(self, outcome: FillOutcome, seconds: float, size: int) -> None:
        self._fills_in_flight.dec()
        self._fills_finished.labels(outcome).inc()
        self._fill_duration.labels(outcome).observe(seconds)
        if outcome == "committed" and size >= _THROUGHPUT_FLOOR and seconds > 0:
            self._fill_throughput.observe(size / seconds)

    def wrote(self, count: int) -> None:
        """A fill wrote `count` more bytes of a blob into the cache."""
        self._fill_bytes.inc(count)

    def repeated(self, size: int) -> None:
        """A fill committed a blob of `size` bytes this process had filled before."""
        self._fill_repeats.inc()
        self._fill_repeated_bytes.inc(size)

    def part_read(self) -> None:
        """A read of a fill (a part, or a piece) reached its end."""
        self._fill_parts.inc()

    def demand_read(self) -> None:
        """A fill started a read for bytes a range reader waits for."""
        self._fill_demand_reads.inc()

    def resumed(self, *, part: bool) -> None:
        """A read of a blob from the backing store resumed after a break; `part`:
        a part of a ranged fill (counted in both)."""
        self._fill_retries.inc()
        if part:
            self._fill_part_retries.inc()

    def range_bytes_unverified(self, count: int) -> None:
        """Range bytes served from a fill before its digest was checked."""
        self._range_unverified.inc(count)

    def range_bytes_discarded(self, count: int) -> None:
        """A fill that had served `count` range bytes failed its digest check."""
        self._range_discarded.inc(count)


class PrefetchRecorder:
    """Prefetches: blobs an image manifest named, filled (or not, for lack of
    room) before a client asked, their bytes, and those evicted unread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._prefetches = Counter(
            PREFIX + "prefetches",
            "Blobs an image manifest named that started filling before a client asked "
            "(started), or did not for lack of room (skipped).",
            ["outcome"],
            registry=r,
        )
        self._prefetch_bytes = Counter(
            PREFIX + "prefetch_bytes", "Bytes of blobs prefetched into the cache.", registry=r
        )
        self._prefetch_evicted_unread = Counter(
            PREFIX + "prefetch_evicted_unread",
            "Prefetched blobs evicted before any client read them (prefetch wasted).",
            registry=r,
        )
        for prefetch in ("started", "skipped"):
            self._prefetches.labels(prefetch)

    def started(self) -> None:
        self._prefetches.labels("started").inc()

    def skipped(self) -> None:
        self._prefetches.labels("skipped").inc()

    def committed(self, size: int) -> None:
        """A prefetch brought a blob of `size` bytes into the cache."""
        self._prefetch_bytes.inc(size)

    def evicted(self) -> None:
        """A prefetched blob was evicted before any client read it."""
        self._prefetch_evicted_unread.inc()
