"""A lazy puller's reads of one cold layer.

stargz-snapshotter reads a layer it starts a container from in this order
(fs/remote/resolver.go): a `bytes=0-1` probe, a HEAD for the size, the footer
(the last 51 bytes), the table of contents before it (here 512 KiB), then the
chunks the container touches: here ten requests of four 256 KiB ranges each,
spread over the layer, with `Accept-Encoding: identity`. The same reads are
made three ways in one run, each on a cold layer behind the same throttle:

- a bare client straight from the bucket (presigned GETs; S3 has no
  multi-range GET, so a chunk request is four GETs at once): the floor;
- registry-local with an empty cache;
- the CNCF registry on the bucket, as hosts ran it before.

Reported: seconds to the footer, to the table of contents and to the last
chunk, from the first request; and for registry-local, S3 bytes over the
layer's size once its fill completed (each byte read once: 1.00). Each is the
median of a few rounds, each round on a cold cache.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace

import aiohttp
import boto3
import yarl

from bench.contenders import Contenders, fills_done
from bench.scenarios.result import Json, random_image
from tests.support.harness import s3_settings, seed
from tests.support.images import blob_key

__all__ = ["Lazy", "Plan", "Reads", "from_bucket", "run", "through_registry"]

FOOTER = 51
TOC = 512 << 10
CHUNK = 256 << 10
REQUESTS, RANGES = 10, 4


@dataclass(frozen=True)
class Plan:
    """The reads of one layer of `size` bytes, as a lazy puller makes them."""

    size: int
    chunks: list[list[tuple[int, int]]]  # per request, [start, end) ranges

    @classmethod
    def of(cls, size: int, seed: int = 7) -> Plan:
        rng = random.Random(seed)
        slots = (size - TOC - FOOTER) // (2 * CHUNK)  # apart by a chunk at least: never merged
        picked = sorted(rng.sample(range(slots), REQUESTS * RANGES))
        ranges = [(p * 2 * CHUNK, p * 2 * CHUNK + CHUNK) for p in picked]
        rng.shuffle(ranges)
        return cls(size, [sorted(ranges[i : i + RANGES]) for i in range(0, len(ranges), RANGES)])

    @property
    def footer(self) -> tuple[int, int]:
        return self.size - FOOTER, self.size

    @property
    def toc(self) -> tuple[int, int]:
        return self.size - FOOTER - TOC, self.size - FOOTER


@dataclass(frozen=True)
class Reads:
    """Seconds from the first request to the end of each phase of a lazy pull;
    for registry-local, also S3 bytes over the layer's once its fill is done."""

    probe: float
    footer: float
    toc: float
    chunks: float
    s3_bytes_ratio: float | None = None

    def to_json(self) -> dict[str, Json]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @staticmethod
    def median(rounds: Sequence[Reads]) -> Reads:
        """Each figure's median over the rounds, on its own."""

        def middle(values: list[float]) -> float:
            return sorted(values)[len(values) // 2]

        ratios = [r.s3_bytes_ratio for r in rounds if r.s3_bytes_ratio is not None]
        return Reads(
            middle([r.probe for r in rounds]),
            middle([r.footer for r in rounds]),
            middle([r.toc for r in rounds]),
            middle([r.chunks for r in rounds]),
            middle(ratios) if ratios else None,
        )


Read = Callable[[list[tuple[int, int]]], Awaitable[int]]  # the ranges -> bytes received


async def timed(plan: Plan, head: Callable[[], Awaitable[int]], read: Read) -> Reads:
    """Seconds from the first request to the footer, the TOC and the last chunk."""
    began = time.monotonic()
    assert await read([(0, 2)]) == 2
    probe = time.monotonic() - began
    assert await head() == plan.size
    assert await read([plan.footer]) == FOOTER
    footer = time.monotonic() - began
    assert await read([plan.toc]) == TOC
    toc = time.monotonic() - began
    for ranges in plan.chunks:
        assert await read(ranges) == RANGES * CHUNK
    return Reads(probe, footer, toc, time.monotonic() - began)


async def through_registry(url: str, plan: Plan) -> Reads:
    """The reads from a registry (multi-range requests), at its blob URL."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def head() -> int:
            async with session.head(url) as response:
                return int(response.headers["Content-Length"])

        async def read(ranges: list[tuple[int, int]]) -> int:
            header = "bytes=" + ",".join(f"{a}-{b - 1}" for a, b in ranges)
            headers = {"Range": header, "Accept-Encoding": "identity"}
            async with session.get(url, headers=headers) as response:
                if response.status != 206:
                    raise RuntimeError(f"{url}: {response.status} to {header[:60]}")
                if len(ranges) == 1:
                    return len(await response.read())
                received = 0
                reader = aiohttp.MultipartReader.from_response(response)
                while (part := await reader.next()) is not None:
                    assert isinstance(part, aiohttp.BodyPartReader)
                    received += len(await part.read(decode=False))
                return received

        return await timed(plan, head, read)


async def from_bucket(s3: str, bucket: str, key: str, plan: Plan) -> Reads:
    """The same reads straight from the bucket: one presigned GET a range, the
    ranges of one request at once (S3 has no multi-range GET)."""
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    signed = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    url = yarl.URL(signed, encoded=True)
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def head() -> int:
            async with session.get(url, headers={"Range": "bytes=0-0"}) as response:
                await response.read()
                return int(response.headers["Content-Range"].rpartition("/")[2])

        async def one(start: int, end: int) -> int:
            async with session.get(url, headers={"Range": f"bytes={start}-{end - 1}"}) as response:
                response.raise_for_status()
                return len(await response.read())

        async def read(ranges: list[tuple[int, int]]) -> int:
            return sum(await asyncio.gather(*(one(a, b) for a, b in ranges)))

        return await timed(plan, head, read)


@dataclass(frozen=True)
class Lazy:
    """Every round's reads by contender, in the order run, and their medians."""

    layer_mb: float
    stream_mbps: float
    latency_ms: float
    rounds: Mapping[str, Sequence[Reads]]

    def to_json(self) -> Json:
        medians = {name: Reads.median(found).to_json() for name, found in self.rounds.items()}
        return {
            "layer_mb": self.layer_mb,
            "stream_mbps": self.stream_mbps,
            "latency_ms": self.latency_ms,
            "rounds": {name: [r.to_json() for r in found] for name, found in self.rounds.items()},
            **medians,
        }

    def report(self) -> str:
        lines = [
            f"\n== lazy pulling: one cold {self.layer_mb:g} MiB layer, stargz's reads "
            f"(footer, TOC, {REQUESTS} x {RANGES} ranges of {CHUNK >> 10} KiB), S3 "
            f"{self.stream_mbps:g} MB/s per stream, {self.latency_ms:g} ms per request =="
        ]
        medians = {name: Reads.median(found) for name, found in self.rounds.items()}
        floor = medians["bare client"]
        for name, row in medians.items():
            cells = "  ".join(
                f"{what} {seconds:6.2f} s ({seconds / base:.2f}x)"
                for what, seconds, base in (
                    ("probe", row.probe, floor.probe),
                    ("footer", row.footer, floor.footer),
                    ("toc", row.toc, floor.toc),
                    ("chunks", row.chunks, floor.chunks),
                )
            )
            extra = ""
            if row.s3_bytes_ratio is not None:
                extra = f"  S3 bytes/blob {row.s3_bytes_ratio:.2f} once filled"
            lines.append(f"{name:18} {cells}{extra}")
        return "\n".join(lines)


async def run(
    contenders: Contenders, layer_mb: float, stream_mbps: float, latency_ms: float, rounds: int
) -> Lazy:
    """The reads straight from the bucket, through registry-local and through the
    CNCF registry, the same throttle for all; `rounds` rounds, each cold."""
    image = random_image([layer_mb])
    await seed(s3_settings(contenders.s3, "bench"), "bench/lazy", "v1", image)
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    plan = Plan.of(len(image.blobs[layer]))
    found: dict[str, list[Reads]] = {
        "bare client": [],
        "registry-local": [],
        "registry:2 on S3": [],
    }
    async with (
        contenders.throttle(contenders.s3, stream_mbps=stream_mbps, latency_ms=latency_ms) as s3,
        contenders.registry2("lazy", endpoint=s3.url) as r2,
    ):
        for round_ in range(rounds):
            found["bare client"].append(await from_bucket(s3.url, "bench", blob_key(layer), plan))
            async with contenders.registry_local(f"lazy-{round_}", s3.url) as rl:
                # A host that has served before: its S3 client and code are warm
                # (the layer is what is cold).
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"{rl.url}/v2/bench/lazy/manifests/v1") as response:
                        await response.read()
                await s3.reset()
                reads = await through_registry(f"{rl.url}/v2/bench/lazy/blobs/{layer}", plan)
                await fills_done(rl)
                counts = await s3.counts()
            of_layer = counts.bytes(lambda k: k.endswith(f"{layer.hex}/data"))
            ratio = of_layer / len(image.blobs[layer])
            found["registry-local"].append(replace(reads, s3_bytes_ratio=ratio))
            found["registry:2 on S3"].append(
                await through_registry(f"{r2.url}/v2/bench/lazy/blobs/{layer}", plan)
            )
    print("lazy: done", flush=True)
    return Lazy(layer_mb, stream_mbps, latency_ms, found)
