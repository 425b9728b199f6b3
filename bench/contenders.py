"""The systems under test, and the throttle that stands in for a remote S3.

Each is started by an async context manager of `Contenders` (or `throttle`)
and stopped on the way out of it, whatever happened inside:

- `registry_local`: this project's `serve`, with a cache directory of its own;
- `registry2`: the CNCF registry (Debian's docker-registry) reading the bucket,
  on a directory, or in proxy mode with a directory cache in front of another
  registry;
- `nginx`: blob files served from disk at their registry URLs, the ceiling for hits;
- `throttle`: bench/throttle.py in front of S3 or a registry, per-request latency
  and per-stream (and per-link) bandwidth caps, counting what passes.

A server counts as started once its URL answers.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import boto3

from tests.support.processes import AWS_ENV, free_port, sealed_env, serve_argv, stop_process

__all__ = ["Contenders", "S3Counts", "Server", "Throttle", "fills_done", "throttle"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Server:
    """A server process at `url`; its peak RSS read from /proc when asked."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    cache: Path | None = None  # registry-local's cache directory

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        if found is None:
            raise RuntimeError(f"{self.name}: no VmHWM in /proc/{self.process.pid}/status")
        return int(found.group(1)) * 1024


@dataclass(frozen=True)
class S3Counts:
    """What a throttle let through since its last reset (tests/support/s3proxy.py)."""

    gets_by_key: dict[str, int]
    bytes_by_key: dict[str, int]  # body bytes sent, per object
    body_bytes: int

    def gets(self, of: Callable[[str], bool]) -> int:
        """GETs of the keys `of` accepts."""
        return sum(n for key, n in self.gets_by_key.items() if of(key))

    def bytes(self, of: Callable[[str], bool]) -> int:
        """Body bytes of the keys `of` accepts."""
        return sum(n for key, n in self.bytes_by_key.items() if of(key))


@dataclass(frozen=True)
class Throttle:
    """bench/throttle.py at `url`, in front of an S3 or a registry."""

    process: subprocess.Popen[bytes]
    url: str

    async def reset(self) -> None:
        """Forget what was counted so far."""
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.url}/__proxy/reset"):
                pass

    async def counts(self) -> S3Counts:
        """What was counted since the last reset."""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.url}/__proxy/stats") as response:
                stats = await response.json()
        return S3Counts(
            gets_by_key={str(k): int(n) for k, n in stats["gets_by_key"].items()},
            bytes_by_key={str(k): int(n) for k, n in stats["bytes_by_key"].items()},
            body_bytes=int(stats["body_bytes"]),
        )


async def _until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(f"{url}: exited with {process.returncode}")
            try:
                async with session.get(url):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)  # a server starting up
    raise RuntimeError(f"{url} did not come up")


@asynccontextmanager
async def throttle(
    upstream: str, latency_ms: float, stream_mbps: float, link_mbps: float = 0
) -> AsyncIterator[Throttle]:
    """bench/throttle.py in front of `upstream`, until the block is left."""
    port = free_port()
    argv = [sys.executable, str(ROOT / "bench" / "throttle.py"), "--upstream", upstream]
    argv += ["--port", str(port), "--latency-ms", str(latency_ms)]
    argv += ["--stream-mbps", str(stream_mbps), "--link-mbps", str(link_mbps)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        await _until_up(f"{url}/__proxy/stats", process)
        yield Throttle(process, url)
    finally:
        process.terminate()
        process.wait()


@asynccontextmanager
async def _serving(
    name: str, argv: list[str], ready: str, log: Path, env: dict[str, str], cache: Path | None
) -> AsyncIterator[Server]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        await _until_up(ready, process)
        yield Server(name, process, ready.rsplit("/v2/", 1)[0].rstrip("/"), cache)
    finally:
        stop_process(process)


@dataclass(frozen=True)
class Contenders:
    """Starts the systems under test on 127.0.0.1, files under `work`. Registries
    read the bucket `bench` through `s3_throttle` unless given another endpoint;
    other throttles default to its latency and per-stream rate."""

    work: Path
    s3: str  # the S3 itself, not throttled
    s3_throttle: Throttle
    latency_ms: float
    stream_mbps: float
    env: dict[str, str] = field(default_factory=lambda: sealed_env(AWS_ENV))

    def create_bucket(self, name: str) -> str:
        """A new, empty bucket on the S3; its name."""
        boto3.client("s3", endpoint_url=self.s3, region_name="us-east-1").create_bucket(Bucket=name)
        return name

    def throttle(
        self,
        upstream: str,
        link_mbps: float = 0,
        stream_mbps: float | None = None,
        latency_ms: float | None = None,
    ) -> AbstractAsyncContextManager[Throttle]:
        """A throttle in front of `upstream`; the suite's latency and rate unless given."""
        return throttle(
            upstream,
            self.latency_ms if latency_ms is None else latency_ms,
            self.stream_mbps if stream_mbps is None else stream_mbps,
            link_mbps,
        )

    @asynccontextmanager
    async def registry_local(
        self, tag: str, endpoint: str | None = None, **options: str
    ) -> AsyncIterator[Server]:
        """registry-local on the throttled S3 (or `endpoint`); `options` are
        REGISTRY_LOCAL_* settings, e.g. S3_PART_SIZE="0"."""
        port = free_port()
        cache = self.work / f"rl-cache-{tag}"
        shutil.rmtree(cache, ignore_errors=True)
        env = {
            **self.env,
            "REGISTRY_LOCAL_S3_ENDPOINT": endpoint or self.s3_throttle.url,
            "REGISTRY_LOCAL_S3_BUCKET": "bench",
            "REGISTRY_LOCAL_LOG_LEVEL": "warning",
            **{f"REGISTRY_LOCAL_{name}": value for name, value in options.items()},
        }
        async with _serving(
            "registry-local",
            serve_argv(port, "--cache-dir", str(cache)),
            f"http://127.0.0.1:{port}/v2/",
            self.work / f"rl-{tag}.log",
            env,
            cache,
        ) as server:
            yield server

    @asynccontextmanager
    async def registry2(
        self,
        tag: str,
        upstream: str | None = None,
        fs_root: Path | None = None,
        endpoint: str | None = None,
    ) -> AsyncIterator[Server]:
        """The CNCF registry on the throttled S3 (or the S3 at `endpoint`), on a
        directory, or in proxy mode in front of `upstream`."""
        port = free_port()
        if fs_root is not None:
            storage = f"  filesystem:\n    rootdirectory: {fs_root}\n"
            proxy = ""
        elif upstream is None:
            storage = (
                f"  s3:\n    region: us-east-1\n    bucket: bench\n"
                f"    regionendpoint: {endpoint or self.s3_throttle.url}\n    accesskey: testing\n"
                f"    secretkey: testing\n    secure: false\n    v4auth: true\n"
            )
            proxy = ""
        else:
            root = self.work / f"r2proxy-{tag}"
            shutil.rmtree(root, ignore_errors=True)
            storage = f"  filesystem:\n    rootdirectory: {root}\n"
            proxy = f"proxy:\n  remoteurl: {upstream}\n"
        config = self.work / f"registry2-{tag}.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n"
            + storage
            + "  redirect:\n    disable: true\n  cache:\n"
            "    blobdescriptor: inmemory\n" + f"http:\n  addr: 127.0.0.1:{port}\n" + proxy
        )
        async with _serving(
            "registry:2" + (" proxy" if upstream else ""),
            ["docker-registry", "serve", str(config)],
            f"http://127.0.0.1:{port}/v2/",
            self.work / f"r2-{tag}.log",
            self.env,
            None,
        ) as server:
            yield server

    @asynccontextmanager
    async def nginx(self, blobs: dict[str, Path]) -> AsyncIterator[Server]:
        """nginx serving the given blob files at their registry URLs."""
        root = self.work / "nginx-root"
        for url_path, source in blobs.items():
            target = root / url_path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(source, target)
        port = free_port()
        temp = self.work / "nginx-temp"
        temp.mkdir(exist_ok=True)
        conf = self.work / "nginx.conf"
        conf.write_text(f"""
daemon off; user root; worker_processes {os.cpu_count()}; pid {self.work}/nginx.pid;
error_log {self.work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; default_type application/octet-stream;
  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; location /v2/ {{ }} }}
}}""")
        process = subprocess.Popen(["nginx", "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            await _until_up(f"http://127.0.0.1:{port}{next(iter(blobs))}", process)
            yield Server("nginx", process, f"http://127.0.0.1:{port}")
        finally:
            stop_process(process)


async def fills_done(server: Server) -> None:
    """Until registry-local has no fill running (its /metrics says so)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(12_000):  # a 1 GiB prefetch reads one part at a time: ~40 s here
            async with session.get(f"{server.url}/metrics") as response:
                text = await response.text()
            if re.search(r"^registry_local_fills_in_flight 0\.0$", text, re.M):
                return
            await asyncio.sleep(0.05)  # a benchmark waiting for a server's background fill
    raise RuntimeError(f"{server.url}: fills still running")
