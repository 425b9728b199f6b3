"""Retention: the uses of served manifests noted in the bucket, which
`registry-local gc --unused-for` reads."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from .shared import PREFIX

__all__ = ["RetentionRecorder"]


class RetentionRecorder:
    """Use records written to the bucket, or failed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._use_records = Counter(
            PREFIX + "use_records",
            "Uses of manifests noted in the bucket (for gc), by outcome.",
            ["outcome"],
            registry=registry,
        )
        for written in ("written", "failed"):
            self._use_records.labels(written)

    def use_recorded(self, written: bool) -> None:
        """A served manifest's use noted in the bucket, or the write failed."""
        self._use_records.labels("written" if written else "failed").inc()
