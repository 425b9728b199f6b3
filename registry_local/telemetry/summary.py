"""A running host at a glance, from the text of its /metrics (`registry-local status`)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from ..progress import human_bytes

__all__ = ["Summary", "summarize"]

_P = "registry_local_"


class _Samples:
    """Sample values by name, summed over the series whose labels match."""

    def __init__(self, text: str) -> None:
        self._samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def names(self) -> set[str]:
        return {name for name, _, _ in self._samples}

    def __call__(self, name: str, **labels: str) -> float:
        return sum(
            value
            for found, have, value in self._samples
            if found == _P + name and all(have.get(k) == v for k, v in labels.items())
        )


@dataclass(frozen=True)
class Summary:
    """What an operator asks of a host first."""

    ready: bool
    blob_hits: float
    blob_lookups: float
    manifest_hits: float
    manifest_lookups: float
    fills_in_flight: float
    fills_committed: float
    fills_failed: float
    fill_joins: float
    fill_bytes: float
    repeated_bytes: float
    repeated_fills: float
    s3_read_bytes: float
    s3_written_bytes: float
    s3_failures: float
    circuit: str
    origin_blobs: float
    origin_written: float
    origin_write_failures: float
    disk_used: float
    disk_limit: float
    disk_free: float
    disk_size: float
    coordinating: bool
    leases_taken: float
    leases_followed: float
    leases_taken_over: float
    peer_sent: float
    peer_received: float
    staged_bytes: float

    @property
    def fan_out(self) -> float | None:
        """Bytes filled per distinct blob byte filled: 1.0 when each crossed once."""
        first = self.fill_bytes - self.repeated_bytes
        return self.fill_bytes / first if first > 0 else None

    def lines(self) -> list[str]:
        return [
            f"ready        {'yes' if self.ready else 'NO (GET /readyz says why)'}",
            f"hit ratio    blobs {_share(self.blob_hits, self.blob_lookups)}, "
            f"manifests {_share(self.manifest_hits, self.manifest_lookups)}",
            f"fills        {self.fills_in_flight:.0f} in flight, {self.fills_committed:.0f} "
            f"committed, {self.fills_failed:.0f} failed; {self.fill_joins:.0f} "
            f"{'request' if self.fill_joins == 1 else 'requests'} joined a fill",
            f"S3           {human_bytes(int(self.s3_read_bytes))} read, "
            f"{human_bytes(int(self.s3_written_bytes))} written, {self.s3_failures:.0f} "
            f"requests failed; circuit {self.circuit}",
            f"origin       {self.origin_blobs:.0f} blobs fetched, {self.origin_written:.0f} "
            f"written through, {self.origin_write_failures:.0f} write-throughs failed",
            f"fan-out      {self._fan_out()}",
            f"disk         {self._disk()}",
            f"fleet        {self._fleet()}",
        ]

    def _fan_out(self) -> str:
        if self.fan_out is None:
            return "nothing filled yet"
        again = f"{self.repeated_fills:.0f} blobs filled again" if self.repeated_fills else ""
        return f"{self.fan_out:.2f} bytes filled per blob byte" + (f" ({again})" if again else "")

    def _disk(self) -> str:
        used = human_bytes(int(self.disk_used))
        limit = (
            f" of {human_bytes(int(self.disk_limit))} ({self.disk_used / self.disk_limit:.0%})"
            if self.disk_limit
            else " (no limit)"
        )
        free = (
            f", {human_bytes(int(self.disk_free))} free on the filesystem "
            f"({self.disk_free / self.disk_size:.0%})"
            if self.disk_size
            else ""
        )
        return f"{used} cached{limit}{free}"

    def _fleet(self) -> str:
        if not self.coordinating:
            return "not coordinating (each miss of an origin blob read by this host alone)"
        return (
            f"coordinating: held {self.leases_taken + self.leases_taken_over:.0f} leases "
            f"({self.leases_taken_over:.0f} taken over), followed {self.leases_followed:.0f}; "
            f"sent peers {human_bytes(int(self.peer_sent))}, received "
            f"{human_bytes(int(self.peer_received))}, staged "
            f"{human_bytes(int(self.staged_bytes))} in the bucket"
        )


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%} ({part:.0f} of {whole:.0f})" if whole else "no lookups yet"


_CIRCUIT = {0: "closed", 1: "half-open", 2: "OPEN (S3 keeps failing)"}


def summarize(text: str, ready: bool) -> Summary:
    """The summary of a /metrics page, of a host that is `ready` (as /readyz
    answered). Raises ValueError when the text is not registry-local's metrics."""
    m = _Samples(text)
    if _P + "ready" not in m.names():
        raise ValueError("no registry_local metrics in the answer")
    return Summary(
        ready=ready,
        blob_hits=m("cache_requests_total", kind="blob", result="hit"),
        blob_lookups=m("cache_requests_total", kind="blob"),
        manifest_hits=m("cache_requests_total", kind="manifest", result="hit"),
        manifest_lookups=m("cache_requests_total", kind="manifest"),
        fills_in_flight=m("fills_in_flight"),
        fills_committed=m("fills_finished_total", outcome="committed"),
        fills_failed=m("fills_finished_total", outcome="failed")
        + m("fills_finished_total", outcome="digest_mismatch"),
        fill_joins=m("fill_joins_total"),
        fill_bytes=m("fill_bytes_total"),
        repeated_bytes=m("fill_repeated_bytes_total"),
        repeated_fills=m("fill_repeats_total"),
        s3_read_bytes=m("s3_read_bytes_total"),
        s3_written_bytes=m("s3_written_bytes_total"),
        s3_failures=m("s3_requests_total", outcome="error")
        + m("s3_requests_total", outcome="unavailable"),
        circuit=_CIRCUIT.get(int(m("s3_circuit_state")), "unknown"),
        origin_blobs=m("origin_fetches_total", kind="blob"),
        origin_written=m("origin_written_total", kind="blob"),
        origin_write_failures=m("origin_write_failures_total"),
        disk_used=m("disk_used_bytes"),
        disk_limit=m("cache_limit_bytes"),
        disk_free=m("disk_free_bytes"),
        disk_size=m("disk_size_bytes"),
        coordinating=m("fleet_coordination") == 1,
        leases_taken=m("fleet_leases_total", event="taken"),
        leases_followed=m("fleet_leases_total", event="followed"),
        leases_taken_over=m("fleet_leases_total", event="taken_over"),
        peer_sent=m("peer_bytes_total", direction="served"),
        peer_received=m("peer_bytes_total", direction="received"),
        staged_bytes=m("fleet_staged_bytes_total", direction="staged"),
    )
