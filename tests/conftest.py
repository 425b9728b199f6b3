from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from registry_local.config import StoreSettings

from .support.engines import run_seaweedfs
from .support.harness import RegistryLocal, StartCache, s3_settings
from .support.processes import AWS_ENV, require_tool, run_moto
from .support.s3proxy import S3Proxy

# The in-process S3 client reads credentials from the standard chain.
os.environ.update(AWS_ENV)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server, shared by the session; each test gets its own bucket."""
    with run_moto(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SeaweedFS's S3 (a real S3 implementation), shared by the session."""
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as url:
        yield url


@pytest.fixture
def bucket(moto: str) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def direct_store(moto: str, bucket: str) -> StoreSettings:
    """The bucket, straight to moto (for seeding: not counted by the proxy)."""
    return s3_settings(moto, bucket)


@pytest.fixture
async def s3proxy(moto: str) -> AsyncIterator[S3Proxy]:
    proxy = await S3Proxy(moto).start()
    yield proxy
    await proxy.close()


@pytest.fixture
def proxied_store(s3proxy: S3Proxy, bucket: str) -> StoreSettings:
    """The bucket through the counting, fault-injecting proxy."""
    return s3_settings(s3proxy.url, bucket)


@pytest.fixture
async def start_cache(tmp_path: Path, proxied_store: StoreSettings) -> AsyncIterator[StartCache]:
    """Start registry-local (several may run, e.g. across a restart); all stop at the end."""
    started: list[RegistryLocal] = []

    async def start(
        cache_dir: Path | None = None, store: StoreSettings | None = None, **cache: Any
    ) -> RegistryLocal:
        server = RegistryLocal(cache_dir or tmp_path / "cache", store or proxied_store, **cache)
        started.append(await server.start())
        return server

    yield start
    for server in reversed(started):
        await server.stop()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    cert, key = tmp_path / "tls" / "ca.crt", tmp_path / "server.key"  # skopeo reads tls/
    cert.parent.mkdir()
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
