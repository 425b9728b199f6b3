"""The fleet at scale: hosts coordinating over one empty bucket, an origin
behind a throttle, two layers larger than a staged part, and only the origin
has them. The flat design (every follower streams the holder's fill) against
staged parts with and without peer streams, each beside the scale model's
figure for the same set-up (bench/fleet_model.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench.contenders import Contenders, fills_done
from bench.fleet_model import Setting, simulate
from bench.scenarios.fleet import FleetPull, hosts, origin, pull_on_each
from bench.scenarios.result import MIB, Json, random_image
from registry_local.config.values import staged_part_size
from tests.support.harness import metric
from tests.support.processes import free_port

__all__ = ["Design", "FleetScale", "run"]

# The set-ups: (name, --peer-max-streams, --fleet-part-size, or None for the
# staged part size of the run); streams None: unbounded.
_DESIGNS: tuple[tuple[str, int | None, str | None], ...] = (
    ("flat: every follower streams", None, "1GiB"),
    ("staged, 2 streams", 2, None),
    ("staged, no streams", 0, None),
)


@dataclass(frozen=True)
class Design:
    """One design's storm: time, origin reads, the busiest host's upload, and the
    model's time for the same set-up."""

    pull: FleetPull
    origin_bytes_ratio: float
    busiest_upload_ratio: float  # the most one host sent its peers, over the image
    staged_gets: int
    model_seconds: float
    peak_rss: int  # the largest of the hosts' peak resident memory

    def to_json(self) -> dict[str, Json]:
        return {
            "seconds": self.pull.seconds,
            "origin_bytes_ratio": self.origin_bytes_ratio,
            "busiest_upload_ratio": self.busiest_upload_ratio,
            "staged_gets": self.staged_gets,
            "first_layer_byte_p50": list(self.pull.first_layer_byte_p50),
            "model_seconds": self.model_seconds,
            "peak_rss": self.peak_rss,
        }


@dataclass(frozen=True)
class FleetScale:
    """The designs by name, in the order run, beside the set-up they share."""

    hosts: int
    layer_mb: float
    stream_mbps: float
    part: str  # the staged designs' --fleet-part-size
    designs: Mapping[str, Design]

    def to_json(self) -> Json:
        return {
            "hosts": self.hosts,
            "layer_mb": self.layer_mb,
            "stream_mbps": self.stream_mbps,
            "part": self.part,
            "designs": {name: design.to_json() for name, design in self.designs.items()},
        }

    def report(self) -> str:
        lines = [
            f"\n== fleet at scale: {self.hosts} hosts x 2 clients, two {self.layer_mb:g} MiB "
            f"layers only the origin has ({self.stream_mbps:g} MB/s per stream, staged "
            f"parts of {self.part}) =="
        ]
        for name, row in self.designs.items():
            firsts = row.pull.first_layer_byte_p50
            lines.append(
                f"{name:30} {row.pull.seconds:6.2f} s (model {row.model_seconds:5.2f} s)  "
                f"origin bytes/blob bytes {row.origin_bytes_ratio:.2f}  busiest host sent "
                f"{row.busiest_upload_ratio:.2f}x the image  staged-part GETs "
                f"{row.staged_gets}  first layer byte p50 {firsts[0]:.3f}..{firsts[-1]:.3f} s  "
                f"peak RSS {row.peak_rss / MIB:.0f} MiB"
            )
        return "\n".join(lines)


async def run(
    contenders: Contenders,
    count: int,
    layer_mb: float,
    stream_mbps: float,
    nic_mbps: float,
    part_size: str = "8MiB",
) -> FleetScale:
    """`count` hosts, two layers of `layer_mb` MiB; the origin and S3 at
    `stream_mbps` per stream (slow enough that hosts on one machine are held by
    their links, as hosts are, not by the CPU they share here); the model's
    hosts on links of `nic_mbps`; staged parts of `part_size`."""
    image = random_image([layer_mb, layer_mb])
    blob_bytes = sum(len(data) for data in image.blobs.values())
    designs: dict[str, Design] = {}
    async with (
        origin(contenders, "scale-origin", image, stream_mbps) as upstream,
        contenders.throttle(contenders.s3, stream_mbps=stream_mbps) as bucket_s3,
    ):
        for name, streams, fixed in _DESIGNS:
            part = fixed or part_size
            bucket = contenders.create_bucket(f"scale-{len(designs)}")
            options = [
                {
                    "S3_BUCKET": bucket,
                    "UPSTREAM": upstream.url,
                    "PEER_LISTEN": f"127.0.0.1:{free_port()}",
                    # flat: a stream for every follower of either layer
                    "PEER_MAX_STREAMS": str(2 * (count - 1) if streams is None else streams),
                    "FLEET_PART_SIZE": part,
                }
                for _ in range(count)
            ]
            async with hosts(contenders, f"scale-{bucket}", options, bucket_s3.url) as servers:
                await bucket_s3.reset()
                await upstream.reset()
                pull = await pull_on_each(servers, 2, f"fleet-scale {name}")
                for server in servers:
                    await fills_done(server)
                counts = await bucket_s3.counts()
                origin_counts = await upstream.counts()
                uploads = [
                    await metric(s.url, "registry_local_peer_bytes_total", direction="served")
                    + await metric(
                        s.url, "registry_local_fleet_staged_bytes_total", direction="staged"
                    )
                    for s in servers
                ]
                peak_rss = max(s.peak_rss() for s in servers)
            designs[name] = Design(
                pull=pull,
                origin_bytes_ratio=origin_counts.bytes(lambda k: "/blobs/" in k) / blob_bytes,
                busiest_upload_ratio=max(uploads) / blob_bytes,
                staged_gets=counts.gets(lambda k: "/staging/" in k),
                model_seconds=_modelled(
                    contenders, count, layer_mb, streams, part, stream_mbps, nic_mbps
                ),
                peak_rss=peak_rss,
            )
    print("fleet-scale: done", flush=True)
    return FleetScale(count, layer_mb, stream_mbps, part_size, designs)


def _modelled(
    contenders: Contenders,
    count: int,
    layer_mb: float,
    streams: int | None,
    part: str,
    stream_mbps: float,
    nic_mbps: float,
) -> float:
    """The scale model's storm for this set-up: one layer, the throttles' rates,
    a host's link at `nic_mbps`."""
    setting = Setting(
        hosts=count,
        blob=int(layer_mb * MIB),
        design="flat" if streams is None else "staged",
        part=staged_part_size(part),
        max_streams=streams or 0,
        nic=nic_mbps * 1e6,
        origin_rate=stream_mbps * 1e6,
        s3_rate=stream_mbps * 1e6,
        s3_latency=contenders.latency_ms / 1000,
    )
    return simulate(setting).storm
