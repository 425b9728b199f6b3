"""`registry-local loadtest`: a storm of engine-like pulls, and what it cost S3.

Each client has a connection pool of its own, as separate engines do, and pulls
the way dockerd does: GET /v2/, HEAD the tag with every manifest type accepted,
GET the manifest by digest, the platform's manifest of an index, then the config
and the layers, three at a time. Every body is hashed as it streams and checked
against its digest; nothing is held whole in memory.

If the server exports registry-local's metrics, they are read before and after
the run, for the S3 requests and bytes it cost and the fan-out: bytes of blobs
read from S3 (by fills, and by reads the cache had no room for) over the bytes of
the distinct blobs the clients wanted. 1 is the goal at any client count; it
holds for ranged fills too, which read one blob as several parts.
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

from .digest import Digest
from .errors import DigestInvalid, ManifestInvalid
from .mediatypes import MANIFEST_MEDIA_TYPES, inspect_manifest
from .reference import parse_image_reference
from .transfer.progress import Progress, human_bytes

__all__ = ["LoadReport", "run_load"]

_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_LAYERS_AT_ONCE = 3  # dockerd's max-concurrent-downloads
_CHUNK = 1 << 20


class PullFailed(Exception):
    pass


@dataclass
class Pull:
    ok: bool = False
    error: str | None = None
    seconds: float = 0.0
    first_layer_byte: float | None = None  # seconds from the start of the pull
    bytes: int = 0


@dataclass
class LoadReport:
    url: str
    image: str
    clients: int
    waves: int
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
            f"{self.clients} clients x {self.waves} waves pulling {self.image} from {self.url}",
            f"pulls: {self.pulls_ok} ok, {self.pulls_failed} failed",
            f"time: {self.seconds:.2f} s, {human_bytes(self.bytes)} at "
            f"{human_bytes(self.throughput)}/s",
            "pull latency: " + _quantiles(self.latency),
            "first layer byte: " + _quantiles(self.first_layer_byte),
        ]
        if self.s3 is not None:
            lines.append(
                f"S3: {self.s3['get_requests']:.0f} GetObject requests, "
                f"{human_bytes(self.s3['read_bytes'])} read; "
                f"{human_bytes(self.s3['blob_bytes'])} of blobs for {self.unique_blobs} "
                f"distinct blobs of {human_bytes(self.unique_bytes)}: fan-out "
                f"{self.s3['fan_out']:.2f}"
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


class _Client:
    def __init__(
        self, base: str, name: str, reference: str, platform: tuple[str, str], progress: Progress
    ) -> None:
        self.base = base
        self.name = name
        self.reference = reference
        self.platform = platform
        self.progress = progress
        self.blobs: dict[Digest, int] = {}  # the blobs pulled, and their sizes

    async def pull(self) -> Pull:
        result = Pull()
        began = time.monotonic()
        try:
            async with aiohttp.ClientSession() as session:  # a pool of its own
                await self._pull(session, result, began)
            result.ok = True
        except (PullFailed, aiohttp.ClientError, TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        result.seconds = time.monotonic() - began
        return result

    async def _pull(self, session: aiohttp.ClientSession, result: Pull, began: float) -> None:
        async with session.get(f"{self.base}/v2/") as response:
            if response.status not in (200, 401):
                raise PullFailed(f"GET /v2/: {response.status}")
        url = f"{self.base}/v2/{self.name}/manifests/{self.reference}"
        async with session.head(url, headers={"Accept": _ACCEPT}) as response:
            if response.status != 200:
                raise PullFailed(f"HEAD {self.reference}: {response.status}")
            digest = response.headers.get("Docker-Content-Digest")
        if digest is None:
            raise PullFailed("no Docker-Content-Digest on the tag")
        info = await self._manifest(session, _digest(digest))
        if info.is_index:
            child = info.platform_child(*self.platform)
            if child is None:
                raise PullFailed(f"no {'/'.join(self.platform)} image in the index")
            info = await self._manifest(session, child)
        config, *layers = info.blobs
        await self._blob(session, config.digest, result, began, layer=False)
        turns = asyncio.Semaphore(_LAYERS_AT_ONCE)

        async def layer(digest: Digest) -> None:
            async with turns:
                await self._blob(session, digest, result, began, layer=True)

        await asyncio.gather(*(layer(d.digest) for d in layers))

    async def _manifest(self, session: aiohttp.ClientSession, digest: Digest) -> Any:
        url = f"{self.base}/v2/{self.name}/manifests/{digest}"
        async with session.get(url, headers={"Accept": _ACCEPT}) as response:
            body = await response.read()
            if response.status != 200:
                raise PullFailed(f"GET manifest {digest}: {response.status}")
        if Digest.of(body, digest.algorithm) != digest:
            raise PullFailed(f"manifest {digest}: digest mismatch")
        try:
            return inspect_manifest(body)
        except ManifestInvalid as exc:
            raise PullFailed(f"manifest {digest}: {exc.message}") from None

    async def _blob(
        self,
        session: aiohttp.ClientSession,
        digest: Digest,
        result: Pull,
        began: float,
        layer: bool,
    ) -> None:
        hasher = digest.hasher()
        size = 0
        async with session.get(f"{self.base}/v2/{self.name}/blobs/{digest}") as response:
            if response.status != 200:
                raise PullFailed(f"GET blob {digest}: {response.status}")
            async for chunk in response.content.iter_chunked(_CHUNK):
                if layer and result.first_layer_byte is None:
                    result.first_layer_byte = time.monotonic() - began
                # Hashing releases the GIL: a thread lets the other core help.
                if len(chunk) > 65536:
                    await asyncio.to_thread(hasher.update, chunk)
                else:
                    hasher.update(chunk)
                size += len(chunk)
                self.progress.advance(len(chunk))
        if not digest.matches(hasher):
            raise PullFailed(f"blob {digest}: digest mismatch (corrupt body)")
        result.bytes += size
        self.blobs[digest] = size


def _digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except DigestInvalid:
        raise PullFailed(f"invalid digest {text!r}") from None


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
    clients: int = 20,
    waves: int = 1,
    ramp: float = 0.0,
    platform: str = "linux/amd64",
) -> LoadReport:
    name, parsed = parse_image_reference(image)
    reference = str(parsed)
    os_name, _, arch = platform.partition("/")
    base = url.rstrip("/")
    report = LoadReport(base, image, clients, waves)
    # A live line on a terminal; nothing at all when stderr is a pipe or a file.
    progress = Progress("loadtest", 0, clients * waves, lines_when_piped=False)
    before = await _s3_counters(base)
    pulls: list[Pull] = []
    wanted: dict[Digest, int] = {}
    began = time.monotonic()
    for _ in range(waves):
        workers = [
            _Client(base, name, reference, (os_name, arch), progress) for _ in range(clients)
        ]

        async def start(number: int, worker: _Client) -> Pull:
            if ramp and clients > 1:
                await asyncio.sleep(ramp * number / (clients - 1))  # a ramp, by design
            pull = await worker.pull()
            progress.item_done("ok" if pull.ok else f"failed: {pull.error}")
            return pull

        pulls.extend(await asyncio.gather(*(start(n, w) for n, w in enumerate(workers))))
        for worker in workers:
            wanted.update(worker.blobs)
    report.seconds = time.monotonic() - began
    progress.finish()
    after = await _s3_counters(base)
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
        report.s3 = delta
    return report


def print_report(report: LoadReport, as_json: bool) -> None:
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.text())
