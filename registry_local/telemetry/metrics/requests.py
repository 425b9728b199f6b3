"""What the server answered: requests by route, their latency and bytes, the
blob bytes sent by where they came from, and the shape of blob Range requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..requestlog import note_sent
from .shared import LATENCY, PREFIX

__all__ = ["ROUTES", "ByteSource", "RangeShape", "RequestRecorder", "Route"]

Route = Literal[
    "base",
    "manifest",
    "blob",
    "tags",
    "referrers",
    "catalog",
    "upload",
    "warm",
    "token",
    "metrics",
    "health",
    "ready",
    "other",
]
ByteSource = Literal["disk", "fill", "s3"]  # where the bytes of a blob sent came from
# How many ranges a Range request on a blob asked for (after merging), or too many.
RangeShape = Literal["one", "many", "too_many"]

ROUTES: tuple[Route, ...] = get_args(Route)


class RequestRecorder:
    """The server's requests: counted by route, timed, their bytes; the blob bytes
    sent and the Range requests on blobs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._http_requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self._http_duration = Histogram(
            PREFIX + "http_request_duration_seconds",
            "Time from request to the end of the response, by route and method.",
            ["route", "method"],
            buckets=LATENCY,
            registry=r,
        )
        self._http_in_flight = Gauge(
            PREFIX + "http_requests_in_flight", "Requests being answered now.", registry=r
        )
        self._tasks = Gauge(
            PREFIX + "asyncio_tasks",
            "asyncio tasks alive in the server (steady when nothing leaks).",
            registry=r,
        )
        self._http_bytes = Counter(
            PREFIX + "http_response_bytes",
            "Response body bytes sent, by route.",
            ["route"],
            registry=r,
        )
        self._blob_bytes_served = Counter(
            PREFIX + "blob_bytes_served",
            "Blob bytes sent to clients: from a committed file (disk), a fill in progress "
            "(fill), or straight from the backing store when the cache had no room (s3).",
            ["source"],
            registry=r,
        )
        self._range_requests = Counter(
            PREFIX + "blob_range_requests",
            "Range requests on blobs: one range, several (multipart/byteranges), or more "
            "than the bound (refused with 400).",
            ["ranges"],
            registry=r,
        )
        for source in get_args(ByteSource):
            self._blob_bytes_served.labels(source)
        for shape in get_args(RangeShape):
            self._range_requests.labels(shape)
        for route in ROUTES:
            self._http_bytes.labels(route)
            for method in ("GET", "HEAD"):
                self._http_requests.labels(route, method, "200")
                self._http_duration.labels(route, method)

    def answered(self, route: Route, method: str, status: int, seconds: float, sent: int) -> None:
        """One answered request. The labelled children are looked up once and kept:
        prometheus-client's labels() is costly on every request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self._http_requests.labels(route, method, str(status)),
                self._http_duration.labels(route, method),
                self._http_bytes.labels(route),
            )
            self._children[key] = children
        requests, duration, sent_bytes = children
        requests.inc()
        duration.observe(seconds)
        sent_bytes.inc(sent)

    def track_server(self, in_flight: Callable[[], int]) -> None:
        """Read the request and task gauges at each scrape."""
        self._http_in_flight.set_function(lambda: float(in_flight()))
        self._tasks.set_function(_task_count)

    def blob_bytes_sent(self, source: ByteSource, count: int, *, by_sendfile: bool) -> None:
        """Blob body bytes sent to a client; `by_sendfile`: outside aiohttp's writer,
        so the request's trace counts them here."""
        self._blob_bytes_served.labels(source).inc(count)
        if by_sendfile:
            note_sent(count)

    def range_request(self, shape: RangeShape) -> None:
        self._range_requests.labels(shape).inc()


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # no event loop here
        return float("nan")
