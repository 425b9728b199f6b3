"""The fleet: leases in the bucket, blob bytes streamed between hosts or staged
in the bucket, the peer streams this host serves, and whether it coordinates."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from .shared import PREFIX

__all__ = ["FleetRecorder", "LeaseEvent", "PeerDirection"]

# What happened to a lease in the bucket (fleet/leases.py).
LeaseEvent = Literal["taken", "followed", "taken_over", "refused"]
PeerDirection = Literal["served", "received"]


class FleetRecorder:
    """What this host did with the others: leases, peer streams and their bytes,
    staged parts, fallbacks to the bucket."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._leases = Counter(
            PREFIX + "fleet_leases",
            "Leases in the bucket: taken (this host reads for the fleet), followed "
            "(another host does), taken over (its holder died), refused (lost a race "
            "to renew or take over).",
            ["event"],
            registry=r,
        )
        self._peer_bytes = Counter(
            PREFIX + "peer_bytes",
            "Blob bytes sent to (served) and read from (received) other hosts of the fleet.",
            ["direction"],
            registry=r,
        )
        self._fleet_staged = Counter(
            PREFIX + "fleet_staged_bytes",
            "Blob bytes staged in the bucket part by part while this host filled them as "
            "a lease holder (staged), and read from parts another host staged (read).",
            ["direction"],
            registry=r,
        )
        self._fleet_peer_busy = Counter(
            PREFIX + "fleet_peer_busy",
            "Times a follower found the lease holder streaming to --peer-max-streams "
            "others already, and read the staged parts from the bucket instead.",
            registry=r,
        )
        self._peer_streams = Gauge(
            PREFIX + "peer_streams",
            "Blob streams this host serves other hosts of the fleet now "
            "(at most --peer-max-streams).",
            registry=r,
        )
        self._peer_refused = Counter(
            PREFIX + "peer_streams_refused",
            "Peer blob requests this host answered 503 because it already streamed to "
            "--peer-max-streams others (they read the staged parts instead).",
            registry=r,
        )
        self._fleet_fallbacks = Counter(
            PREFIX + "fleet_bucket_fallbacks",
            "Times a follower could not stream from the lease holder and waited for "
            "the bucket instead.",
            registry=r,
        )
        self._fleet_coordination = Gauge(
            PREFIX + "fleet_coordination",
            "1 while this host coordinates origin reads with the fleet through the "
            "bucket; 0 when it is off or the backing store refuses conditional writes.",
            registry=r,
        )
        for event in get_args(LeaseEvent):
            self._leases.labels(event)
        for direction in get_args(PeerDirection):
            self._peer_bytes.labels(direction)
        for staged in ("staged", "read"):
            self._fleet_staged.labels(staged)

    def lease(self, event: LeaseEvent) -> None:
        self._leases.labels(event).inc()

    def peer_bytes(self, direction: PeerDirection, count: int) -> None:
        self._peer_bytes.labels(direction).inc(count)

    def staged_read(self, count: int) -> None:
        """Bytes of a part another host staged, read from the bucket."""
        self._fleet_staged.labels("read").inc(count)

    def staged(self, count: int) -> None:
        """Bytes this host, as a lease holder, staged in the bucket."""
        self._fleet_staged.labels("staged").inc(count)

    def peer_busy(self) -> None:
        """The holder had no peer stream to spare: its staged parts instead."""
        self._fleet_peer_busy.inc()

    def peer_stream(self, change: int) -> None:
        """A peer's blob stream from this host began (+1) or ended (-1)."""
        self._peer_streams.inc(change)

    def peer_refused(self) -> None:
        """A peer asked for a stream when none was to spare."""
        self._peer_refused.inc()

    def fell_back(self) -> None:
        """A follower could not stream from the lease holder: it waits for the bucket."""
        self._fleet_fallbacks.inc()

    def coordinating(self, on: bool) -> None:
        """Whether this host coordinates origin reads with the fleet."""
        self._fleet_coordination.set(1 if on else 0)
