"""One engine-like pull (3 layers at a time) of an image of many layers, cold
with and without prefetch, against the same pull warm and against its floors:
the least time S3's link allows (computed), and a bare client pulling the image
straight from the bucket (measured). S3 is capped per stream and per link, with
room for more than three streams."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import boto3
import yarl

from bench.contenders import Contenders
from bench.scenarios.result import Json, random_image, ratio
from bench.scenarios.storm import Storm, cold_storm
from registry_local.config import StoreSettings
from registry_local.layout import BucketLayout
from registry_local.loadtest.run import run_load
from registry_local.oci.digest import Digest
from tests.support.harness import s3_settings, seed
from tests.support.images import blob_key

__all__ = ["ColdLayers", "LayersPull", "run"]

PART_SIZE = StoreSettings().part_size  # the default, which the scenario uses


@dataclass(frozen=True)
class LayersPull:
    """One cold pull, the same pull warm, and the bare client's just before it."""

    storm: Storm
    warm_seconds: float
    bucket_pull_seconds: float
    floor_seconds: float  # the slowest of warm, the computed link and the bare client
    mb_per_second: float

    def to_json(self) -> dict[str, Json]:
        return {
            **self.storm.to_json(),
            "warm_seconds": self.warm_seconds,
            "bucket_pull_seconds": self.bucket_pull_seconds,
            "floor_seconds": self.floor_seconds,
            "mb_per_second": self.mb_per_second,
        }


@dataclass(frozen=True)
class ColdLayers:
    """The pull with prefetch and without, beside the set-up and its computed floor."""

    layers: int
    layer_mb: float
    stream_mbps: float
    link_mbps: float
    # every byte at the link rate, or the largest first part at one stream's rate
    link_floor_seconds: float
    prefetch: LayersPull
    no_prefetch: LayersPull

    def to_json(self) -> Json:
        return {
            "layers": self.layers,
            "layer_mb": self.layer_mb,
            "stream_mbps": self.stream_mbps,
            "link_mbps": self.link_mbps,
            "link_floor_seconds": self.link_floor_seconds,
            "prefetch": self.prefetch.to_json(),
            "no prefetch": self.no_prefetch.to_json(),
        }

    def report(self) -> str:
        lines = [
            f"\n== one pull, 3 layers at a time, of {self.layers} x {self.layer_mb:g} MiB "
            f"layers, S3 {self.stream_mbps:g} MB/s per stream, {self.link_mbps:g} MB/s "
            f"link: computed link floor {self.link_floor_seconds:.2f} s =="
        ]
        for mode, pull in (("no prefetch", self.no_prefetch), ("prefetch", self.prefetch)):
            row, warm = pull.storm, pull.warm_seconds
            link_floor = max(warm, self.link_floor_seconds)
            lines.append(
                f"{mode:12} cold {row.seconds:5.2f} s, warm {warm:5.2f} s, "
                f"straight from the bucket {pull.bucket_pull_seconds:5.2f} s: cold/floor "
                f"{ratio(row.seconds, pull.floor_seconds)} (computed link floor "
                f"{ratio(row.seconds, link_floor)}), "
                f"cold/warm {ratio(row.seconds, warm)}, first layer byte "
                f"{row.first_layer_byte_p50:.3f} s, {pull.mb_per_second:.0f} MB/s, "
                f"S3 bytes/blob {row.s3_blob_bytes_ratio:.2f}x"
            )
        return "\n".join(lines)


async def run(
    contenders: Contenders, layers: int, layer_mb: float, stream_mbps: float, link_mbps: float
) -> ColdLayers:
    """`layers` layers of `layer_mb` MiB, S3 at `stream_mbps` per stream and
    `link_mbps` in all (0: no link cap)."""
    image = random_image([layer_mb] * layers)
    await seed(s3_settings(contenders.s3, "bench"), "bench/layers", "v1", image)
    sizes = [len(data) for data in image.blobs.values()]
    stream_rate, link_rate = stream_mbps * 1e6, link_mbps * 1e6
    link_floor = max(
        sum(sizes) / link_rate if link_rate else 0,
        max(min(size, PART_SIZE) for size in sizes) / stream_rate if stream_rate else 0,
    )
    pulls: list[LayersPull] = []
    async with contenders.throttle(
        contenders.s3, link_mbps=link_mbps, stream_mbps=stream_mbps
    ) as s3:
        for options in ({}, {"PREFETCH": "false"}):
            # ... and measured: a bare client pulling it from the bucket, just before
            bucket_pull = await _read_from_bucket(s3.url, "bench/layers", "v1", image.blobs)
            async with contenders.registry_local(f"layers-{len(pulls)}", s3.url, **options) as rl:
                cold = await cold_storm(rl, s3, "bench/layers:v1", 1, image.blobs)
                warm = await run_load(rl.url, "bench/layers:v1", clients=1)
            floor = max(warm.seconds, link_floor, bucket_pull)
            mb_per_second = sum(sizes) / cold.seconds / 1e6
            pulls.append(LayersPull(cold, warm.seconds, bucket_pull, floor, mb_per_second))
    print("cold layers: done", flush=True)
    prefetch, no_prefetch = pulls
    return ColdLayers(layers, layer_mb, stream_mbps, link_mbps, link_floor, prefetch, no_prefetch)


async def _read_from_bucket(s3: str, name: str, tag: str, blobs: dict[Digest, bytes]) -> float:
    """Seconds for a bare client to pull the image straight from the bucket at
    `s3`: the tag's link, then its manifest, then every blob at once, one stream
    each. The least time this S3 link (and the S3 stand-in on this machine)
    allows for a pull that starts from a tag."""
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    layout = BucketLayout()

    def url(key: str) -> yarl.URL:
        signed = client.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": key})
        return yarl.URL(signed, encoded=True)

    tag_link = url(layout.tag_current_link(name, tag))
    blob_urls = {digest: url(blob_key(digest)) for digest in blobs}
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def read(where: yarl.URL) -> bytes:
            async with session.get(where) as response:
                response.raise_for_status()
                return await response.read()

        began = time.monotonic()
        digest = Digest.parse((await read(tag_link)).decode())
        manifest = await read(url(blob_key(digest)))
        bodies = await asyncio.gather(*(read(u) for u in blob_urls.values()))
        seconds = time.monotonic() - began
    if Digest.of(manifest) != digest or bodies != list(blobs.values()):
        raise RuntimeError("the image read from the bucket is not the image seeded")
    return seconds
