"""One engine-like pull of an image, and a group of them at once.

A client pulls the way dockerd does: GET /v2/, HEAD the tag with every manifest
type accepted, GET the manifest by digest, the platform's manifest of an index,
then the config and the layers, three at a time (as dockerd and containerd:
`layer_concurrency`), each request with the target's credentials if it has
any (Basic, as an engine sends them after `docker login`). Every body is hashed as it
streams and checked against its digest; nothing is held whole in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from ..config.settings import LoadSettings
from ..errors import DigestInvalid, ManifestInvalid
from ..oci.digest import Digest
from ..oci.mediatypes import MANIFEST_MEDIA_TYPES, inspect_manifest

__all__ = ["Client", "Pull", "PullFailed", "Tally", "Target", "run_clients"]

_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_LOAD = LoadSettings()


class PullFailed(Exception):
    """One simulated pull went wrong (a bad status, a missing header, a digest mismatch)."""


@dataclass
class Pull:
    """How one simulated pull went: whether it succeeded, its error, its times, its bytes."""

    ok: bool = False
    error: str | None = None
    seconds: float = 0.0
    first_layer_byte: float | None = None  # seconds from the start of the pull
    bytes: int = 0


@dataclass(frozen=True)
class Target:
    """What every client pulls: `name` at `reference` from the registry at `base`."""

    base: str
    name: str
    reference: str
    platform: tuple[str, str]  # (os, architecture) of an index's image
    layer_concurrency: int = _LOAD.layer_concurrency  # layers fetched at once by one pull
    # The Authorization header every request carries (None: anonymous); never in a repr.
    authorization: str | None = field(default=None, repr=False)


class Tally(Protocol):
    """Where clients report progress: bytes as they arrive, pulls as they end."""

    def advance(self, count: int) -> None: ...

    def item_done(self, what: str) -> None: ...


async def run_clients(
    target: Target, numbers: Sequence[int], clients: int, ramp: float, tally: Tally
) -> tuple[list[Pull], dict[Digest, int]]:
    """Pull with one client per number at once; client `n` of `clients` starts
    `ramp * n / (clients - 1)` seconds in. The pulls, and the blobs pulled with
    their sizes."""
    workers = [Client(target, tally) for _ in numbers]

    async def start(number: int, worker: Client) -> Pull:
        if ramp and clients > 1:
            await asyncio.sleep(ramp * number / (clients - 1))  # a ramp, by design
        pull = await worker.pull()
        tally.item_done("ok" if pull.ok else f"failed: {pull.error}")
        return pull

    pulls = await asyncio.gather(*(start(n, w) for n, w in zip(numbers, workers, strict=True)))
    blobs: dict[Digest, int] = {}
    for worker in workers:
        blobs.update(worker.blobs)
    return list(pulls), blobs


class Client:
    """One engine: a connection pool of its own, pulling the target once."""

    def __init__(self, target: Target, progress: Tally) -> None:
        self.base = target.base
        self.name = target.name
        self.reference = target.reference
        self.platform = target.platform
        self.layer_concurrency = target.layer_concurrency
        self.headers = {"Authorization": target.authorization} if target.authorization else {}
        self.progress = progress
        self.blobs: dict[Digest, int] = {}  # the blobs pulled, and their sizes

    async def pull(self) -> Pull:
        result = Pull()
        began = time.monotonic()
        try:
            # A pool of its own; credentials, if any, on every request as an
            # engine sends them once it has logged in.
            async with aiohttp.ClientSession(headers=self.headers) as session:
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
        turns = asyncio.Semaphore(self.layer_concurrency)

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
            async for chunk in response.content.iter_any():
                if layer and result.first_layer_byte is None:
                    result.first_layer_byte = time.monotonic() - began
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
