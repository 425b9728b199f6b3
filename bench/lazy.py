"""The lazy scenario of bench/run.py: a lazy puller's reads of one cold layer.

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
layer's size once its fill completed (each byte read once: 1.00).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import boto3
import yarl

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


Read = Callable[[list[tuple[int, int]]], Awaitable[int]]  # the ranges -> bytes received


async def timed(plan: Plan, head: Callable[[], Awaitable[int]], read: Read) -> dict[str, float]:
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
    return {"probe": probe, "footer": footer, "toc": toc, "chunks": time.monotonic() - began}


async def through_registry(url: str, plan: Plan) -> dict[str, float]:
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


async def from_bucket(s3: str, bucket: str, key: str, plan: Plan) -> dict[str, float]:
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


def print_lazy(rows: dict[str, Any]) -> None:
    print(
        f"\n== lazy pulling: one cold {rows['layer_mb']:g} MiB layer, stargz's reads "
        f"(footer, TOC, {REQUESTS} x {RANGES} ranges of {CHUNK >> 10} KiB), S3 "
        f"{rows['stream_mbps']:g} MB/s per stream, {rows['latency_ms']:g} ms per request =="
    )
    floor = rows["bare client"]
    for name in ("bare client", "registry-local", "registry:2 on S3"):
        row = rows.get(name)
        if row is None:
            continue
        cells = "  ".join(
            f"{what} {row[what]:6.2f} s ({row[what] / floor[what]:.2f}x)"
            for what in ("probe", "footer", "toc", "chunks")
        )
        extra = ""
        if "s3_bytes_ratio" in row:
            extra = f"  S3 bytes/blob {row['s3_bytes_ratio']:.2f} once filled"
        print(f"{name:18} {cells}{extra}")
