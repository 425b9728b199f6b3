"""Several hosts of one fleet: `registry-local serve` processes over one bucket.

Each host is a process on 127.0.0.1 with its own port, cache dir and peer
listener. The origin is the CNCF registry behind a counting proxy, and another
counting proxy sits in front of the bucket (SeaweedFS), so a test sees what each
tier was asked and sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import boto3

from registry_local.config import StoreSettings
from registry_local.layout import BucketLayout
from registry_local.transfer.imagebuild import Image

from .harness import metric, pull_image, seed
from .processes import free_port, require_tool, run_docker_registry, serving
from .s3proxy import S3Proxy

__all__ = [
    "TOKEN",
    "Bench",
    "Host",
    "Peers",
    "hosts",
    "kill_when_followed",
    "metric_sum",
    "open_bench",
    "until",
]

TOKEN = "fleet-secret"
NAME = "team/app"


@dataclass
class Bench:
    """An origin, a bucket, and what each was asked."""

    image: Image
    origin: S3Proxy  # the CNCF registry behind a counting proxy
    bucket_proxy: S3Proxy  # the bucket behind a counting proxy
    endpoint: str  # the bucket's S3, direct
    bucket: str
    token_file: Path
    tmp: Path

    def expected(self) -> dict[str, bytes]:
        return {
            str(d): data for d, data in [*self.image.blobs.items(), *self.image.manifests.items()]
        }

    def origin_gets(self) -> Counter[str]:
        return Counter(r.key for r in self.origin.requests if r.method == "GET")

    def blob_gets(self) -> dict[str, int]:
        gets = self.origin_gets()
        return {str(d): gets[f"v2/{NAME}/blobs/{d}"] for d in self.image.blobs}

    def origin_bytes(self, digest: str) -> int:
        """Body bytes the origin sent of one blob, to every host together."""
        return self.origin.bytes_by_key[f"v2/{NAME}/blobs/{digest}"]

    def bucket_writes(self) -> Counter[str]:
        """Objects written per key of distribution's tree (leases left out): a
        PutObject, or a multipart upload completed (its parts are not objects),
        that the store answered with success (a host killed as it sent one
        wrote nothing)."""
        return Counter(
            r.key.split("/", 1)[1]
            for r in self.bucket_proxy.requests
            if "/docker/registry/v2/" in r.key
            and r.status is not None
            and 200 <= r.status < 300
            and (
                (r.method == "PUT" and "uploadId=" not in r.query)
                or (r.method == "POST" and "uploadId=" in r.query)
            )
        )

    def keys(self, prefix: str) -> list[str]:
        """The objects under `prefix` in the bucket now."""
        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def host_args(
        self, name: str, peer_port: int, *extra: str, lease_ttl: float = 5.0
    ) -> list[str]:
        return [
            *("--cache-dir", str(self.tmp / name)),
            *("--s3-bucket", self.bucket, "--s3-endpoint", self.bucket_proxy.url),
            *("--upstream", self.origin.url),
            *("--peer-listen", f"127.0.0.1:{peer_port}"),
            *("--peer-token-file", str(self.token_file)),
            *("--lease-ttl", str(lease_ttl)),
            *("--log-level", "debug"),
            *extra,
        ]

    async def settled(self, leases: bool = True) -> None:
        """Wait until the bucket holds every blob and (with `leases`) every host
        has let go of its leases: the write-through ran in other processes, so
        it is observed. A host killed holding a lease leaves it behind."""
        wanted = {BucketLayout().blob_data(d) for d in self.image.blobs}
        held: list[str] = []
        missing: set[str] = set()
        try:
            async with asyncio.timeout(60):
                while True:
                    # boto3 blocks: listed in a thread, so the proxies on this loop run on
                    if leases:
                        held = await asyncio.to_thread(self.keys, "registry-local/leases/")
                    blobs = await asyncio.to_thread(self.keys, "docker/registry/v2/blobs/")
                    missing = wanted - set(blobs)
                    if not held and not missing:
                        return
                    await asyncio.sleep(0.05)  # other processes' work: observed, not awaited
        except TimeoutError:
            raise AssertionError(f"not settled: leases {held}, blobs missing {missing}") from None


@contextlib.asynccontextmanager
async def open_bench(tmp: Path, seaweedfs: str, image: Image) -> AsyncIterator[Bench]:
    """`image` only the origin has (as team/app:v1), and an empty bucket."""
    root = tmp / "origin"
    await seed(StoreSettings(s3=None, fs_root=root), NAME, "v1", image)
    bucket = f"fleet-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=seaweedfs, region_name="us-east-1").create_bucket(Bucket=bucket)
    token_file = tmp / "peer-token"
    token_file.write_text(TOKEN + "\n")
    async with run_docker_registry(tmp, fs_root=root) as url:
        origin = await S3Proxy(url).start()
        bucket_proxy = await S3Proxy(seaweedfs).start()
        try:
            yield Bench(image, origin, bucket_proxy, seaweedfs, bucket, token_file, tmp)
        finally:
            await bucket_proxy.close()
            await origin.close()


@dataclass
class Host:
    """One running host of a test fleet: its API URL, its process, its peer listener's URL."""

    url: str
    process: asyncio.subprocess.Process
    peer_url: str


@dataclass(frozen=True)
class Peers:
    """TLS for the peer listeners: a CA, and one certificate it issued for every
    host, for the name `registry-local-peer` (hosts check it by that name)."""

    ca: Path
    cert: Path
    key: Path
    name: str = "registry-local-peer"

    def args(self, ca: Path | None = None) -> list[str]:
        return [
            *("--peer-tls-cert", str(self.cert), "--peer-tls-key", str(self.key)),
            *("--peer-ca", str(ca or self.ca), "--peer-tls-name", self.name),
        ]

    @classmethod
    def issue(cls, directory: Path) -> Peers:
        """A new CA, and a certificate it signed for `name` (openssl)."""
        openssl = require_tool("openssl")
        directory.mkdir(parents=True, exist_ok=True)
        ca, ca_key = directory / "ca.crt", directory / "ca.key"
        cert, key, request = directory / "peer.crt", directory / "peer.key", directory / "peer.csr"
        name = cls.name

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True)

        run(
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=fleet test CA", "-keyout", str(ca_key), "-out", str(ca)),
        )
        run(
            *("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}"),
            *("-keyout", str(key), "-out", str(request)),
        )
        extensions = directory / "san.ext"
        extensions.write_text(f"subjectAltName=DNS:{name}\n")
        run(
            *("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key)),
            *("-CAcreateserial", "-days", "1", "-extfile", str(extensions), "-out", str(cert)),
        )
        return cls(ca, cert, key)


@contextlib.asynccontextmanager
async def hosts(
    bench: Bench,
    count: int,
    *extra: str,
    lease_ttl: float = 5.0,
    tls: Peers | None = None,
) -> AsyncIterator[list[Host]]:
    """`count` hosts of the fleet, each with `extra` arguments."""
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for n in range(count):
            port = free_port()
            more = [*extra, *(tls.args() if tls else [])]
            args = bench.host_args(f"host-{n}", port, *more, lease_ttl=lease_ttl)
            url, process = await stack.enter_async_context(serving(*args))
            scheme = "https" if tls else "http"
            started.append(Host(url, process, f"{scheme}://127.0.0.1:{port}"))
        yield started


async def kill_when_followed(
    holder: Host, others: list[Host], first: asyncio.Task[dict[str, bytes]]
) -> list[dict[str, bytes]]:
    """Pull on every other host, SIGKILL `holder` (whose pull is `first`) once
    each of them follows it, and return their pulls."""
    followers = [asyncio.create_task(pull_image(h.url, NAME, "v1")) for h in others]
    followed = "registry_local_fleet_leases_total"
    await until(lambda: metric_sum(others, followed, event="followed"), len(others))
    holder.process.send_signal(signal.SIGKILL)
    await holder.process.wait()
    with contextlib.suppress(Exception):
        await first  # its client saw the host die
    return await asyncio.gather(*followers)


async def metric_sum(fleet: list[Host], name: str, **labels: str) -> float:
    return sum([await metric(host.url, name, **labels) for host in fleet])


async def until(read: Callable[[], Awaitable[float]], at_least: float) -> None:
    """Wait until another process's metric reaches a value (observed by polling)."""
    async with asyncio.timeout(60):
        while True:
            if await read() >= at_least:
                return
            await asyncio.sleep(0.02)
