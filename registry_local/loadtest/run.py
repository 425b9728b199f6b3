"""`registry-local loadtest`: a storm of engine-like pulls, and what it cost S3.

Each client has a connection pool of its own, as separate engines do, and pulls
the way dockerd does, checking every digest (client.py). With `processes`
above 1 the clients are shared among worker processes (workers.py), so the
load tester's own CPU does not cap the storm.

If the server exports registry-local's metrics, they are read before and after
the run, for the S3 requests and bytes it cost and the fan-out: bytes of blobs
read from S3 (by fills, and by reads the cache had no room for) over the bytes of
the distinct blobs the clients wanted. 1 is the goal at any client count; it
holds for ranged fills too, which read one blob as several parts. The blob reads
per distinct blob (S3 GETs of blob bodies) are reported beside it: 1 for blobs
up to one part, the number of parts for larger ones.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ..config.settings import LoadSettings
from ..oci.digest import Digest
from ..oci.reference import parse_image_reference
from ..progress import Progress, human_bytes
from .client import Pull, Target, run_clients
from .workers import ClientProcesses

__all__ = ["LoadReport", "run_load"]

_LOAD = LoadSettings()  # the defaults


@dataclass
class LoadReport:
    """The outcome of a load test: pulls, timings, bytes and, when the server exports
    its metrics, what it cost S3."""

    url: str
    image: str
    clients: int
    waves: int
    processes: int = 1
    pulls_ok: int = 0
    pulls_failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0
    latency: dict[str, float] = field(default_factory=dict)
    first_layer_byte: dict[str, float] = field(default_factory=dict)
    unique_blobs: int = 0
    unique_bytes: int = 0
    s3: dict[str, float] | None = None

    @property
    def throughput(self) -> float:
        return self.bytes / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput_bytes_per_second": self.throughput}

    def text(self) -> str:
        lines = [
            f"{self.clients} clients x {self.waves} waves pulling {self.image} from {self.url}"
            + (f" ({self.processes} processes)" if self.processes > 1 else ""),
            f"pulls: {self.pulls_ok} ok, {self.pulls_failed} failed",
            f"time: {self.seconds:.2f} s, {human_bytes(self.bytes)} at "
            f"{human_bytes(self.throughput)}/s",
            "pull latency: " + _quantiles(self.latency),
            "first layer byte: " + _quantiles(self.first_layer_byte),
        ]
        if self.s3 is not None:
            lines.append(
                f"S3: {self.s3['get_requests']:.0f} GetObject requests, "
                f"{human_bytes(self.s3['read_bytes'])} read; backing store: "
                f"{human_bytes(self.s3['blob_bytes'])} of blobs read for {self.unique_blobs} "
                f"distinct blobs of {human_bytes(self.unique_bytes)}: fan-out "
                f"{self.s3['fan_out']:.2f} ({self.s3['reads_per_blob']:.2f} blob reads "
                "per distinct blob; a ranged fill reads a large blob as several parts)"
            )
        lines.extend(f"error: {e}" for e in self.errors[:10])
        return "\n".join(lines)


def _quantiles(values: dict[str, float]) -> str:
    if not values:
        return "-"
    return ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in values.items())


def _summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    cuts = (
        statistics.quantiles(ordered, n=100, method="inclusive")
        if len(ordered) > 1
        else ordered * 99
    )
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98], "max": ordered[-1]}


async def _s3_counters(base: str) -> dict[str, float] | None:
    """registry-local's S3 counters from /metrics, or None for another registry."""
    # (sample, the value of its one label that counts, or None) -> report key
    wanted = {
        ("registry_local_s3_requests_total", "GetObject"): "get_requests",
        ("registry_local_s3_read_bytes_total", None): "read_bytes",
        ("registry_local_s3_blob_reads_total", None): "blob_reads",
        ("registry_local_fill_bytes_total", None): "blob_bytes",
        ("registry_local_blob_bytes_served_total", "s3"): "blob_bytes",
    }
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
            if response.status != 200:
                return None
            text = await response.text()
    except aiohttp.ClientError:
        return None
    found = dict.fromkeys(wanted.values(), 0.0)
    seen = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = sample.labels.get("operation") or sample.labels.get("source")
            name = wanted.get((sample.name, label)) or wanted.get((sample.name, None))
            if name is not None:
                found[name] += sample.value
                seen = True
    return found if seen else None


async def run_load(
    url: str,
    image: str,
    clients: int = _LOAD.clients,
    waves: int = _LOAD.waves,
    ramp: float = _LOAD.ramp,
    platform: str = _LOAD.platform,
    processes: int = 1,
    layer_concurrency: int = _LOAD.layer_concurrency,
    authorization: str | None = None,
) -> LoadReport:
    """Pull `image` from `url` with `clients` clients at once, `waves` times over,
    each fetching `layer_concurrency` layers at a time, every request with
    `authorization` as its Authorization header if given; with `processes` > 1,
    the clients run in that many worker processes."""
    name, parsed = parse_image_reference(image)
    os_name, _, arch = platform.partition("/")
    target = Target(
        url.rstrip("/"), name, str(parsed), (os_name, arch), layer_concurrency, authorization
    )
    processes = max(1, min(processes, clients))
    report = LoadReport(target.base, image, clients, waves, processes)
    # A live line on a terminal; nothing at all when stderr is a pipe or a file.
    progress = Progress("loadtest", 0, clients * waves, lines_when_piped=False)
    pulls: list[Pull] = []
    wanted: dict[Digest, int] = {}
    if processes == 1:
        before = await _s3_counters(target.base)
        began = time.monotonic()
        for _ in range(waves):
            wave = await run_clients(target, range(clients), clients, ramp, progress)
            pulls.extend(wave[0])
            wanted.update(wave[1])
    else:
        # Spawned (and waited for) in a thread: the registry may share our loop.
        workers = ClientProcesses(target, processes, clients, ramp)
        await asyncio.to_thread(workers.start)
        try:
            before = await _s3_counters(target.base)
            began = time.monotonic()
            for _ in range(waves):
                wave = await asyncio.to_thread(workers.wave, progress)
                pulls.extend(wave[0])
                wanted.update(wave[1])
        finally:
            await asyncio.to_thread(workers.stop)
    report.seconds = time.monotonic() - began
    progress.finish()
    after = await _s3_counters(target.base)
    report.pulls_ok = sum(p.ok for p in pulls)
    report.pulls_failed = len(pulls) - report.pulls_ok
    report.errors = sorted({p.error for p in pulls if p.error})
    report.bytes = sum(p.bytes for p in pulls)
    report.latency = _summary([p.seconds for p in pulls if p.ok])
    report.first_layer_byte = _summary(
        [p.first_layer_byte for p in pulls if p.ok and p.first_layer_byte is not None]
    )
    report.unique_blobs = len(wanted)
    report.unique_bytes = sum(wanted.values())
    if before is not None and after is not None:
        delta = {k: after[k] - before[k] for k in after}
        delta["fan_out"] = delta["blob_bytes"] / max(1, report.unique_bytes)
        delta["reads_per_blob"] = delta["blob_reads"] / max(1, report.unique_blobs)
        report.s3 = delta
    return report


def print_report(report: LoadReport, as_json: bool) -> None:
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.text())
