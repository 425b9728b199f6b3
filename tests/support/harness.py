"""registry-local running in the test's own event loop, and helpers around it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
from aiohttp import web

from registry_local.backing.opening import open_store
from registry_local.config import (
    AccessSettings,
    CacheSettings,
    PushSettings,
    S3Settings,
    ServerSettings,
    Settings,
    StoreSettings,
)
from registry_local.oci.digest import Digest
from registry_local.server.app import build_app
from registry_local.server.run import tls_context
from registry_local.server.state import METRICS
from registry_local.telemetry.metrics import Metrics
from registry_local.transfer.image_writer import write_image
from registry_local.transfer.imagebuild import Image

from .images import cached_blob

__all__ = [
    "RegistryLocal",
    "StartCache",
    "fetch",
    "metric",
    "pull_image",
    "s3_settings",
    "seed",
    "seed_all",
]

T = TypeVar("T")

MANIFEST_ACCEPT = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)


_S3_FIELDS = ("read_timeout", "circuit_threshold", "circuit_cooldown")


def s3_settings(endpoint: str, bucket: str, **kwargs: Any) -> StoreSettings:
    """Store settings for a test bucket. S3Settings fields may be given too; the
    circuit breaker's cool-down is 0 unless asked, so a recovered S3 is probed at
    once (tests do not wait)."""
    s3 = S3Settings(bucket=bucket, endpoint=endpoint, read_timeout=5.0, circuit_cooldown=0.0)
    asked = {
        f: kwargs.pop(f, None) for f in ("read_timeout", "circuit_threshold", "circuit_cooldown")
    }
    return StoreSettings(
        s3=replace(s3, **{f: value for f, value in asked.items() if value is not None}),
        fs_root=Path("/nonexistent"),
        **kwargs,
    )


async def seed(store: StoreSettings, name: str, tag: str | None, image: Image) -> None:
    """Write an image into the backing store, as a registry push would."""
    await seed_all(store, [(name, tag, image)])


async def seed_all(store: StoreSettings, entries: Sequence[tuple[str, str | None, Image]]) -> None:
    async with open_store(store) as distribution:
        await asyncio.gather(*(write_image(distribution, *entry) for entry in entries))


class RegistryLocal:
    """The server on 127.0.0.1 and a free port, with a given cache dir and store."""

    def __init__(self, cache_dir: Path, store: StoreSettings, **options: Any) -> None:
        """`options` are fields of CacheSettings, PushSettings, ServerSettings or
        AccessSettings."""
        push = {
            k: options.pop(k)
            for k in ("allow_push", "allow_delete", "upload_expiry")
            if k in options
        }
        server = {
            k: options.pop(k)
            for k in (
                "warm_endpoint",
                "auth_htpasswd",
                "auth_token_file",
                "tls_cert",
                "tls_key",
                "prefetch",
                "prefetch_concurrency",
            )
            if k in options
        }
        access = {
            k: options.pop(k)
            for k in ("policy", "decision_ttl", "offline_grace", "max_decisions")
            if k in options
        }
        self.settings = Settings(
            server=ServerSettings(port=0, ready_interval=0, **server),
            access=AccessSettings(**access),
            cache=CacheSettings(directory=cache_dir, **options),
            store=store,
            push=PushSettings(**push),
        )
        self.url = ""
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> RegistryLocal:
        self.app = build_app(self.settings)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        tls = tls_context(self.settings)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def __getitem__(self, key: web.AppKey[T]) -> T:
        """What the running server keeps under `key` (its caches, its pusher)."""
        assert self.app is not None, "not started"
        return self.app[key]

    @property
    def metrics(self) -> Metrics:
        return self[METRICS]

    def blob_path(self, digest: Digest) -> Path:
        return cached_blob(self.settings.cache.directory, digest)


class StartCache(Protocol):
    """The `start_cache` fixture: start registry-local on a cache dir (the
    test's own unless given) and a store (the counted bucket unless given);
    `cache` are options of RegistryLocal. Every server stops after the test."""

    async def __call__(
        self, cache_dir: Path | None = None, store: StoreSettings | None = None, **cache: Any
    ) -> RegistryLocal: ...


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    accept: Sequence[str] = MANIFEST_ACCEPT,
    session: aiohttp.ClientSession | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection pool: status, headers, body."""
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        all_headers = {"Accept": ", ".join(accept)} if accept else {}
        all_headers.update(headers or {})
        async with session.request(method, url, headers=all_headers) as response:
            return response.status, dict(response.headers), await response.read()
    finally:
        if own:
            await session.close()


async def pull_image(
    base: str, name: str, tag: str, auth: dict[str, str] | None = None, query: str = ""
) -> dict[str, bytes]:
    """Pull like an engine on its own connection pool: resolve the tag, fetch every
    manifest and blob, check every digest. Returns digest -> content. `auth`:
    an Authorization header sent with every request; `query` (`?ns=...`) ends
    every URL, as containerd's."""
    import json

    got: dict[str, bytes] = {}
    async with aiohttp.ClientSession(headers=auth) as session:
        status, headers, _ = await fetch(
            f"{base}/v2/{name}/manifests/{tag}{query}", method="HEAD", session=session
        )
        assert status == 200, status
        pending = [headers["Docker-Content-Digest"]]
        while pending:
            digest = pending.pop()
            status, headers, body = await fetch(
                f"{base}/v2/{name}/manifests/{digest}{query}", session=session
            )
            assert status == 200, (status, body)
            assert str(Digest.of(body)) == digest
            got[digest] = body
            doc = json.loads(body)
            pending.extend(m["digest"] for m in doc.get("manifests", []))
            blobs = ([doc["config"]] if "config" in doc else []) + doc.get("layers", [])
            results = await asyncio.gather(
                *(
                    fetch(f"{base}/v2/{name}/blobs/{b['digest']}{query}", session=session)
                    for b in blobs
                )
            )
            for blob, (status, _, content) in zip(blobs, results, strict=True):
                assert status == 200, status
                assert str(Digest.of(content)) == blob["digest"]
                got[blob["digest"]] = content
    return got


async def metric(base: str, name: str, **labels: str) -> float:
    """One sample from the server's /metrics (0 if it is not there)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@asynccontextmanager
async def htpasswd_origin(
    workdir: Path, image: Image, user: str, password: str
) -> AsyncIterator[str]:
    """The CNCF registry (Debian's docker-registry) on a directory holding
    team/app:v1, with one htpasswd user: an origin registry; yields its URL."""
    import bcrypt

    from .processes import run_docker_registry

    root = workdir / "origin"
    await seed(StoreSettings(s3=None, fs_root=root), "team/app", "v1", image)
    htpasswd = workdir / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{user}:{hashed}\n")
    async with run_docker_registry(workdir, fs_root=root, htpasswd=htpasswd) as url:
        yield url
