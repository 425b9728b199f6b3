"""Origin registries (--upstream): what was fetched from one, what of it was
written through to the bucket or failed to be, and origins that ignore Range."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter

from .shared import PREFIX

__all__ = ["OriginKind", "OriginRecorder", "WrittenKind"]

OriginKind = Literal["blob", "manifest"]
WrittenKind = Literal["blob", "manifest", "tag"]


class OriginRecorder:
    """Fetches from origin registries and their write-through to the bucket."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._origin_fetches = Counter(
            PREFIX + "origin_fetches",
            "Blobs (fills started) and manifests fetched from an origin registry (--upstream).",
            ["kind"],
            registry=r,
        )
        self._origin_written = Counter(
            PREFIX + "origin_written",
            "Blobs, manifests and tags from an origin written through to the bucket.",
            ["kind"],
            registry=r,
        )
        self._origin_write_failures = Counter(
            PREFIX + "origin_write_failures",
            "Write-throughs to the bucket that failed (the content is still served here).",
            registry=r,
        )
        self._origin_range_ignored = Counter(
            PREFIX + "origin_range_ignored",
            "Fills from an origin registry that answered a range with the whole blob: "
            "read in order only, so a range waits for the bytes before it.",
            registry=r,
        )
        for kind in get_args(OriginKind):
            self._origin_fetches.labels(kind)
        for written in get_args(WrittenKind):
            self._origin_written.labels(written)

    def fetched(self, kind: OriginKind) -> None:
        """A blob or manifest asked of an origin registry (a fill or a fetch started)."""
        self._origin_fetches.labels(kind).inc()

    def written_through(self, kind: WrittenKind) -> None:
        """Something from an origin registry written through to the bucket."""
        self._origin_written.labels(kind).inc()

    def write_failed(self) -> None:
        """A write-through to the bucket failed (the content is still served here)."""
        self._origin_write_failures.inc()

    def range_ignored(self) -> None:
        """A fill's origin answered a range with the whole blob."""
        self._origin_range_ignored.inc()
