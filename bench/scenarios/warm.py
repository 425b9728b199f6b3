"""Warm scenarios, on a filled cache: the throughput of one large blob (wrk, 20
connections) against nginx serving the same file, small-blob and manifest-HEAD
request rates against nginx and the CNCF registry on the bucket."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import Contenders
from bench.scenarios.result import MIB, Json, ratio
from registry_local.layout import CacheLayout
from registry_local.loadtest.run import run_load
from registry_local.oci.mediatypes import MANIFEST_MEDIA_TYPES
from registry_local.transfer.imagebuild import Image

__all__ = ["Requests", "Transfer", "Warm", "run"]

_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)


@dataclass(frozen=True)
class Requests:
    """Requests per second of one contender (ab, for HEAD)."""

    requests_per_second: float

    def to_json(self) -> dict[str, Json]:
        return {"requests_per_second": self.requests_per_second}


@dataclass(frozen=True)
class Transfer(Requests):
    """Requests and bytes per second of one contender (wrk)."""

    bytes_per_second: float

    def to_json(self) -> dict[str, Json]:
        return {**super().to_json(), "bytes_per_second": self.bytes_per_second}


@dataclass(frozen=True)
class Warm:
    """Each warm measurement by contender, and registry-local's peak RSS after them."""

    throughput: Mapping[str, Transfer]
    small_blob: Mapping[str, Transfer]
    manifest_head: Mapping[str, Requests]
    peak_rss: int

    def to_json(self) -> Json:
        def rates(by_name: Mapping[str, Requests]) -> Json:
            return {name: rate.to_json() for name, rate in by_name.items()}

        return {
            "throughput": rates(self.throughput),
            "small blob": rates(self.small_blob),
            "manifest HEAD": rates(self.manifest_head),
            "peak_rss": self.peak_rss,
        }

    def report(self) -> str:
        lines = ["\n== warm (wrk, 20 connections) =="]
        base = self.throughput["nginx"].bytes_per_second
        for name, transfer in self.throughput.items():
            lines.append(
                f"throughput   {name:18} {transfer.bytes_per_second / (1 << 30):7.2f} GiB/s "
                f"({ratio(transfer.bytes_per_second, base)} nginx)"
            )
        rows: Mapping[str, Requests]
        for scenario, rows, baseline in (
            ("small blob", self.small_blob, "nginx"),
            ("manifest HEAD", self.manifest_head, "registry:2 on S3"),
        ):
            base = rows[baseline].requests_per_second
            for name, rate in rows.items():
                lines.append(
                    f"{scenario:12} {name:18} {rate.requests_per_second:9.0f} req/s "
                    f"({ratio(rate.requests_per_second, base)} {baseline})"
                )
        return "\n".join(lines)


def _found(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"no {pattern!r} in:\n{text}")
    return found


def head_rate(url: str, seconds: int, connections: int = 20) -> Requests:
    """HEAD requests per second with ApacheBench (wrk waits for a body after a
    HEAD answer's Content-Length, so it cannot measure HEAD)."""
    argv = ["ab", "-k", "-i", "-q", "-c", str(connections), "-t", str(seconds)]
    argv += ["-n", "10000000", "-H", f"Accept: {_ACCEPT}", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(_found(r"Requests per second:\s+([\d.]+)", out).group(1))
    failed = int(_found(r"Failed requests:\s+(\d+)", out).group(1))
    if failed or re.search(r"Non-2xx responses:\s+(\d+)", out):
        raise RuntimeError(f"HEAD {url}: failed or non-2xx answers:\n{out}")
    return Requests(rate)


def wrk(url: str, seconds: int, script: Path, connections: int = 20) -> Transfer:
    """GET requests and bytes per second with wrk."""
    script.write_text(f'wrk.method = "GET"\nwrk.headers["Accept"] = "{_ACCEPT}"\n')
    argv = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(_found(r"Requests/sec:\s+([\d.]+)", out).group(1))
    number, unit = _found(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()
    scale = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1 << 30}[unit]
    return Transfer(rate, float(number) * scale)


async def run(contenders: Contenders, image: Image, seconds: int) -> Warm:
    """Each measurement for `seconds`, on registry-local once its cache is filled."""
    script = contenders.work / "get.lua"
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    config = min(image.blobs, key=lambda d: len(image.blobs[d]))
    async with (
        contenders.registry_local("warm") as rl,
        contenders.registry2("warm") as r2,
    ):
        await run_load(rl.url, "bench/app:v1", clients=1)  # fill the cache
        assert rl.cache is not None
        cache = CacheLayout(rl.cache)
        files = {f"/v2/bench/app/blobs/{d}": cache.blob(d) for d in (layer, config)}
        async with contenders.nginx(files) as nginx:
            warm = Warm(
                throughput={
                    n: wrk(f"{p.url}/v2/bench/app/blobs/{layer}", seconds, script)
                    for n, p in (("registry-local", rl), ("nginx", nginx))
                },
                small_blob={
                    n: wrk(f"{p.url}/v2/bench/app/blobs/{config}", seconds, script)
                    for n, p in (("registry-local", rl), ("nginx", nginx), ("registry:2 on S3", r2))
                },
                manifest_head={
                    n: head_rate(f"{p.url}/v2/bench/app/manifests/v1", seconds)
                    for n, p in (("registry-local", rl), ("registry:2 on S3", r2))
                },
                peak_rss=rl.peak_rss(),
            )
    print("warm scenarios: done", flush=True)
    return warm
