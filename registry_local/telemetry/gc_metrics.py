"""The metrics of one `registry-local gc` run, written as a Prometheus text
file (node_exporter's textfile collector, or any scraper of files): a command
that ends has no /metrics to scrape."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

__all__ = ["GcRunMetrics"]

_P = "registry_local_gc_"


class GcRunMetrics:
    """The gauges of one gc run, written to a Prometheus text file."""

    def __init__(self) -> None:
        r = self._registry = CollectorRegistry()
        self._objects = Gauge(
            _P + "removed_objects",
            "Objects the last gc removed (or would have, in a dry run), by kind.",
            ["kind"],
            registry=r,
        )
        self._bytes = Gauge(_P + "removed_bytes", "Blob bytes the last gc removed.", registry=r)
        self._last = Gauge(_P + "last_run_timestamp_seconds", "When the last gc ended.", registry=r)
        self._seconds = Gauge(_P + "last_run_seconds", "How long the last gc took.", registry=r)
        self._success = Gauge(
            _P + "last_run_success", "1 if the last gc ended without error.", registry=r
        )
        self._dry = Gauge(_P + "last_run_dry", "1 if the last gc was a dry run.", registry=r)

    def ran(self, removed: dict[str, int], blob_bytes: int, seconds: float, dry: bool) -> None:
        for kind, count in removed.items():
            self._objects.labels(kind).set(count)
        self._bytes.set(blob_bytes)
        self._seconds.set(seconds)
        self._dry.set(1 if dry else 0)
        self._success.set(1)
        self._last.set(time.time())

    def failed(self) -> None:
        self._success.set(0)
        self._last.set(time.time())

    def write(self, path: Path) -> None:
        """Raises OSError."""
        write_to_textfile(str(path), self._registry)
