"""A storm of pulls on a fresh cache, measured the same way by every scenario
that pulls an image: time, first layer byte, peak RSS, and what S3 sent for the
image's own blobs."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from bench.contenders import Server, Throttle
from bench.scenarios.result import Json
from registry_local.loadtest.run import run_load
from registry_local.oci.digest import Digest

__all__ = ["CLIENT_PROCESSES", "Storm", "cold_storm"]

# The load tester's clients run in one worker process per CPU, as separate engines would.
CLIENT_PROCESSES = os.cpu_count() or 1


@dataclass(frozen=True)
class Storm:
    """One storm: its time and what S3 sent for the image's blobs."""

    seconds: float
    first_layer_byte_p50: float | None
    first_layer_byte_p99: float | None
    s3_blob_gets_per_blob: float
    # bytes of the blobs read from S3, over their sizes: 1.00 is each byte once
    s3_blob_bytes_ratio: float
    s3_bytes: int
    peak_rss: int

    def to_json(self) -> dict[str, Json]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


async def cold_storm(
    server: Server, s3: Throttle, image: str, clients: int, blobs: dict[Digest, bytes]
) -> Storm:
    """A storm of `clients` pulls of `image` from `server`; S3 GETs and bytes
    counted at `s3` for the image's own blobs."""
    await s3.reset()
    report = await run_load(server.url, image, clients=clients, processes=CLIENT_PROCESSES)
    counts = await s3.counts()
    data_keys = {f"/{d.hex}/data" for d in blobs}

    def of_blobs(key: str) -> bool:
        return any(key.endswith(k) for k in data_keys)

    if report.pulls_failed:
        raise RuntimeError(f"{server.name}: {report.pulls_failed} pulls failed: {report.errors}")
    return Storm(
        seconds=report.seconds,
        first_layer_byte_p50=report.first_layer_byte.get("p50"),
        first_layer_byte_p99=report.first_layer_byte.get("p99"),
        s3_blob_gets_per_blob=counts.gets(of_blobs) / len(data_keys),
        s3_blob_bytes_ratio=counts.bytes(of_blobs) / sum(len(data) for data in blobs.values()),
        s3_bytes=counts.body_bytes,
        peak_rss=server.peak_rss(),
    )
