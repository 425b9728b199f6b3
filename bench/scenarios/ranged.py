"""One cold pull of the large image through an S3 capped per stream and per
link: one stream per blob against parallel ranged parts."""

from __future__ import annotations

from dataclasses import dataclass

from bench.contenders import Contenders
from bench.scenarios.result import MIB, Json, ratio
from bench.scenarios.storm import Storm, cold_storm
from registry_local.transfer.imagebuild import Image

__all__ = ["Ranged", "RangedPull", "run"]


@dataclass(frozen=True)
class RangedPull:
    """One pull of the large image, and its rate."""

    storm: Storm
    mb_per_second: float

    def to_json(self) -> dict[str, Json]:
        return {**self.storm.to_json(), "mb_per_second": self.mb_per_second}


@dataclass(frozen=True)
class Ranged:
    """The pull with one stream per blob, and with ranged parts."""

    stream_mbps: float  # S3's cap per stream, reported, not in the results file
    link_mbps: float
    one_stream: RangedPull
    ranged: RangedPull

    def to_json(self) -> Json:
        return {
            "link_mbps": self.link_mbps,
            "one stream": self.one_stream.to_json(),
            "ranged": self.ranged.to_json(),
        }

    def report(self) -> str:
        link = self.link_mbps
        base = self.one_stream.storm.seconds
        lines = [
            f"\n== one cold pull of the large image, S3 {self.stream_mbps:.0f} MB/s "
            f"per stream, {link:.0f} MB/s link =="
        ]
        for mode, pull in (("one stream", self.one_stream), ("ranged", self.ranged)):
            row = pull.storm
            lines.append(
                f"{mode:12} {row.seconds:7.2f} s  {pull.mb_per_second:6.0f} MB/s "
                f"({pull.mb_per_second / link:.0%} of link)  speed-up "
                f"{ratio(base, row.seconds)}  S3 GETs/blob {row.s3_blob_gets_per_blob:.0f}  "
                f"S3 bytes/blob {row.s3_blob_bytes_ratio:.2f}x  "
                f"peak RSS {row.peak_rss / MIB:.0f} MiB"
            )
        return "\n".join(lines)


async def run(contenders: Contenders, big: Image, link_mbps: float) -> Ranged:
    """`big` (seeded as bench/big:v1) pulled once each way, S3's link capped at `link_mbps`."""
    size = sum(len(data) for data in big.blobs.values())
    pulls: list[RangedPull] = []
    async with contenders.throttle(contenders.s3, link_mbps=link_mbps) as s3:
        for options in ({"S3_PART_SIZE": "0"}, {}):
            async with contenders.registry_local(f"ranged-{len(pulls)}", s3.url, **options) as rl:
                storm = await cold_storm(rl, s3, "bench/big:v1", 1, big.blobs)
            pulls.append(RangedPull(storm, size / storm.seconds / 1e6))
    print("ranged fill: done", flush=True)
    one_stream, parts = pulls
    return Ranged(contenders.stream_mbps, link_mbps, one_stream, parts)
