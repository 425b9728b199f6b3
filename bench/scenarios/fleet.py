"""A fleet: hosts over one empty bucket, an origin registry behind them
(throttled per stream like S3): one host alone, then the fleet each on its own,
then the fleet coordinating through the bucket (--peer-listen).

`origin`, `hosts` and `pull_on_each` start an origin and a fleet and time its
storm; fleet_scale.py uses them too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from bench.contenders import Contenders, Server, Throttle
from bench.scenarios.result import Json, ratio
from registry_local.config import StoreSettings
from registry_local.loadtest.run import run_load
from registry_local.transfer.imagebuild import Image
from tests.support.harness import seed
from tests.support.processes import free_port

__all__ = ["Fleet", "FleetPull", "FleetRow", "hosts", "origin", "pull_on_each", "run"]

_MODES = (
    ("one host", 1, False),
    ("fleet, each on its own", None, False),  # None: every host
    ("fleet, coordinated", None, True),
)


@asynccontextmanager
async def origin(
    contenders: Contenders, tag: str, image: Image, stream_mbps: float | None = None
) -> AsyncIterator[Throttle]:
    """An origin registry that alone holds `image` (as bench/app:v1), on a
    directory, behind a throttle (the suite's rate per stream unless given)."""
    root = contenders.work / f"{tag}-store"
    await seed(StoreSettings(s3=None, fs_root=root), "bench/app", "v1", image)
    async with (
        contenders.registry2(tag, fs_root=root) as registry,
        contenders.throttle(registry.url, stream_mbps=stream_mbps) as throttled,
    ):
        yield throttled


@asynccontextmanager
async def hosts(
    contenders: Contenders, tag: str, options: Sequence[dict[str, str]], endpoint: str | None = None
) -> AsyncIterator[list[Server]]:
    """One registry-local per entry of `options` (REGISTRY_LOCAL_* settings),
    all stopped on the way out."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                contenders.registry_local(f"{tag}-{n}", endpoint, **each)
            )
            for n, each in enumerate(options)
        ]


@dataclass(frozen=True)
class FleetPull:
    """Every host's clients pulling bench/app:v1 at once: until the last is done."""

    seconds: float
    first_layer_byte_p50: list[float]  # per host, fastest first


async def pull_on_each(servers: Sequence[Server], clients: int, what: str) -> FleetPull:
    """`clients` pulls of bench/app:v1 on every host at once; every pull must succeed."""
    began = time.monotonic()
    reports = await asyncio.gather(
        *(run_load(s.url, "bench/app:v1", clients=clients, processes=1) for s in servers)
    )
    seconds = time.monotonic() - began
    if any(r.pulls_failed for r in reports):
        raise RuntimeError(f"{what}: pulls failed: {[r.errors for r in reports]}")
    return FleetPull(seconds, sorted(r.first_layer_byte["p50"] for r in reports))


@dataclass(frozen=True)
class FleetRow:
    """One set-up's storm, and what the origin sent for it."""

    hosts: int
    pull: FleetPull
    origin_bytes_ratio: float  # origin bytes of blobs over the image's: 1.00 is once

    def to_json(self) -> dict[str, Json]:
        return {
            "hosts": self.hosts,
            "seconds": self.pull.seconds,
            "origin_bytes_ratio": self.origin_bytes_ratio,
            "first_layer_byte_p50": list(self.pull.first_layer_byte_p50),
        }


@dataclass(frozen=True)
class Fleet:
    """The fleet's set-ups by name, in the order run."""

    stream_mbps: float  # the origin's rate per stream, reported, not in the results file
    hosts: int
    clients: int
    rows: Mapping[str, FleetRow]

    def to_json(self) -> Json:
        rows = {mode: row.to_json() for mode, row in self.rows.items()}
        return {"hosts": self.hosts, "clients": self.clients, **rows}

    def report(self) -> str:
        one = self.rows["one host"].pull.seconds
        lines = [
            f"\n== fleet: {self.hosts} hosts x {self.clients} clients, an origin behind an "
            f"empty bucket ({self.stream_mbps:.0f} MB/s per stream) =="
        ]
        for mode, row in self.rows.items():
            seconds, firsts = row.pull.seconds, row.pull.first_layer_byte_p50
            lines.append(
                f"{mode:24} {seconds:6.2f} s ({ratio(seconds, one)} one host)  "
                f"origin bytes/blob bytes {row.origin_bytes_ratio:.2f}  first layer byte p50 "
                f"per host {' '.join(f'{s:.3f}' for s in firsts)} s "
                f"(slowest {ratio(firsts[-1], firsts[0])} fastest)"
            )
        return "\n".join(lines)


async def run(contenders: Contenders, image: Image, count: int, clients: int) -> Fleet:
    """`count` hosts of `clients` clients each, every set-up on a bucket of its own."""
    blob_bytes = sum(len(data) for data in image.blobs.values())
    rows: dict[str, FleetRow] = {}
    async with origin(contenders, "origin", image) as upstream:
        for mode, size, coordinated in _MODES:
            bucket = contenders.create_bucket(f"fleet-{len(rows)}")
            options = [
                {"S3_BUCKET": bucket, "UPSTREAM": upstream.url, "LOG_LEVEL": "warning"}
                | ({"PEER_LISTEN": f"127.0.0.1:{free_port()}"} if coordinated else {})
                for _ in range(size or count)
            ]
            async with hosts(contenders, bucket, options) as servers:
                await upstream.reset()
                pull = await pull_on_each(servers, clients, f"fleet {mode}")
                counts = await upstream.counts()
            of_blobs = counts.bytes(lambda key: "/blobs/" in key)
            rows[mode] = FleetRow(size or count, pull, of_blobs / blob_bytes)
    print("fleet: done", flush=True)
    return Fleet(contenders.stream_mbps, count, clients, rows)
