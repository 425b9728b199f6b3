"""A large blob (1 GiB by default) pulled cold by one client, then by many at
once from another fresh cache."""

from __future__ import annotations

from dataclasses import dataclass

from bench.contenders import Contenders
from bench.scenarios.result import MIB, Json, ratio
from bench.scenarios.storm import Storm, cold_storm
from registry_local.transfer.imagebuild import Image

__all__ = ["BigBlob", "run"]


@dataclass(frozen=True)
class BigBlob:
    """The large blob's storms: one client, then `clients`."""

    big_mb: float  # the blob's size, reported, not in the results file
    clients: int
    one: Storm
    storm: Storm

    def to_json(self) -> Json:
        return {"clients": self.clients, "one": self.one.to_json(), "storm": self.storm.to_json()}

    def report(self) -> str:
        lines = [f"\n== large blob ({self.big_mb} MiB), cold =="]
        base = self.one.seconds
        for label, row in (("1 client", self.one), (f"{self.clients} clients", self.storm)):
            lines.append(
                f"{label:12} {row.seconds:7.2f} s ({ratio(row.seconds, base)}),"
                f" first byte p50 {row.first_layer_byte_p50:.3f} s p99 "
                f"{row.first_layer_byte_p99:.3f} s, S3 bytes/blob "
                f"{row.s3_blob_bytes_ratio:.2f}x, peak RSS {row.peak_rss * 1 / MIB:.0f} MiB"
            )
        return "\n".join(lines)


async def run(contenders: Contenders, big: Image, big_mb: float, clients: int) -> BigBlob:
    """`big` (seeded as bench/big:v1) pulled by one client, then by `clients`."""
    s3 = contenders.s3_throttle
    async with contenders.registry_local("big") as rl:
        async with contenders.registry_local("big-one") as one:
            single = await cold_storm(one, s3, "bench/big:v1", 1, big.blobs)
        storm = await cold_storm(rl, s3, "bench/big:v1", clients, big.blobs)
    print("large blob: done", flush=True)
    return BigBlob(big_mb, clients, single, storm)
