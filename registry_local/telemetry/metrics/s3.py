"""The S3 backing store: requests by operation and outcome, their latency and
retries, the bytes read and written, the circuit breaker, and the slots blob
reads take."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .shared import LATENCY, PREFIX

__all__ = ["S3_OPERATIONS", "S3Operation", "S3Outcome", "S3Recorder"]

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

S3_OPERATIONS: tuple[S3Operation, ...] = get_args(S3Operation)
_S3_OUTCOMES: tuple[S3Outcome, ...] = get_args(S3Outcome)


class S3Recorder:
    """What S3 was asked and what it cost: requests, retries, bytes, the circuit
    breaker's state, and blob reads holding or waiting for a slot."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._s3_requests = Counter(
            PREFIX + "s3_requests",
            "Requests to S3, by operation and outcome.",
            ["operation", "outcome"],
            registry=r,
        )
        self._s3_duration = Histogram(
            PREFIX + "s3_request_duration_seconds",
            "Time to the response headers of S3 requests, by operation.",
            ["operation"],
            buckets=LATENCY,
            registry=r,
        )
        self._s3_retries = Counter(
            PREFIX + "s3_retries",
            "S3 requests made again after a failure a retry may fix.",
            ["operation"],
            registry=r,
        )
        self._s3_circuit_state = Gauge(
            PREFIX + "s3_circuit_state",
            "The S3 circuit breaker: 0 closed (normal), 1 half-open (probing), 2 open "
            "(S3 keeps failing: calls fail at once).",
            registry=r,
        )
        self._s3_circuit_opened = Counter(
            PREFIX + "s3_circuit_opened", "Times the S3 circuit breaker opened.", registry=r
        )
        self._s3_blob_reads = Counter(
            PREFIX + "s3_blob_reads",
            "Blob body reads from S3 (fills, each part of a ranged fill, uncached reads "
            "and resumes).",
            registry=r,
        )
        self._s3_slots = Gauge(
            PREFIX + "s3_blob_reads_active",
            "Blob bodies being read from S3 now (at most --s3-max-concurrency).",
            registry=r,
        )
        self._s3_slot_waiters = Gauge(
            PREFIX + "s3_blob_reads_queued",
            "Blob reads waiting for a free S3 slot, served fill by fill in turn.",
            registry=r,
        )
        self._s3_read_bytes = Counter(
            PREFIX + "s3_read_bytes", "Bytes read from S3 object bodies.", registry=r
        )
        self._s3_written_bytes = Counter(
            PREFIX + "s3_written_bytes", "Bytes written to S3.", registry=r
        )
        for operation in S3_OPERATIONS:
            self._s3_duration.labels(operation)
            self._s3_retries.labels(operation)
            for outcome in _S3_OUTCOMES:
                self._s3_requests.labels(operation, outcome)

    def request(self, operation: S3Operation, outcome: S3Outcome, seconds: float) -> None:
        self._s3_requests.labels(operation, outcome).inc()
        self._s3_duration.labels(operation).observe(seconds)

    def retry(self, operation: S3Operation) -> None:
        self._s3_retries.labels(operation).inc()

    def transferred(self, *, read: int = 0, written: int = 0) -> None:
        """Bytes of object bodies read from or written to S3."""
        if read:
            self._s3_read_bytes.inc(read)
        if written:
            self._s3_written_bytes.inc(written)

    def circuit(self, state: int, *, opened: bool) -> None:
        """The circuit breaker is in `state` (0 closed, 1 half-open, 2 open);
        `opened`: it has just opened."""
        self._s3_circuit_state.set(state)
        if opened:
            self._s3_circuit_opened.inc()

    def slots(self, held: int, waiting: int) -> None:
        """Blob reads from S3 now under way, and waiting for a slot."""
        self._s3_slots.set(held)
        self._s3_slot_waiters.set(waiting)

    def blob_read(self) -> None:
        """A blob body read from S3 begins (it holds a slot)."""
        self._s3_blob_reads.inc()
