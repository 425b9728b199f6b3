"""Warm-up: fetch images into the cache ahead of a deploy.

Manifests (every platform, or the chosen ones) and their blobs go through the
same caches as live requests, so a warm-up and a pull of the same blob share
one fill. Blobs are fetched a few at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from ..errors import ManifestUnknown
from ..oci.digest import Digest
from ..oci.mediatypes import Descriptor
from .blobs import BlobCache
from .manifests import ManifestCache

__all__ = ["WarmResult", "Warmer", "parse_platform"]


def parse_platform(text: str) -> tuple[str, str, str | None]:
    """`os/arch[/variant]`, e.g. linux/arm64/v8."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {text!r} is not os/arch[/variant]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


@dataclass
class WarmResult:
    """What warming one image did: the image, its digest, the manifests, blobs and bytes
    it went through, and how many blobs were not cached before."""

    image: str
    digest: str
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    fetched_blobs: int = 0  # not in the cache before

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Warmer:
    """Warms images through the manifest and blob caches, a few blobs at a time."""

    def __init__(self, manifests: ManifestCache, blobs: BlobCache, concurrency: int) -> None:
        self._manifests = manifests
        self._blobs = blobs
        self._turns = asyncio.Semaphore(concurrency)

    async def warm(
        self,
        name: str,
        reference: Digest | str,
        platforms: Iterable[tuple[str, str, str | None]] = (),
        on_blob: Callable[[int], None] = lambda _: None,
    ) -> WarmResult:
        """Fetch one image. Raises RegistryError (unknown image) or a fill's error."""
        wanted = list(platforms)
        if isinstance(reference, Digest):
            top = await self._manifests.by_digest(name, reference)
        else:
            top = await self._manifests.by_tag(name, reference)
        result = WarmResult(
            f"{name}:{reference}" if isinstance(reference, str) else f"{name}@{reference}",
            str(top.digest),
        )
        blobs: dict[Digest, Descriptor] = {}
        pending = [top]
        while pending:
            manifest = pending.pop()
            result.manifests += 1
            blobs.update((b.digest, b) for b in manifest.info.blobs if not b.urls)
            children = [c for c in manifest.info.manifests if _chosen(c, wanted)]
            if manifest.info.is_index and not children:
                asked = ", ".join("/".join(p for p in w if p) for w in wanted)
                raise ManifestUnknown(
                    f"{result.image} has no image for {asked}", detail={"image": result.image}
                )
            pending.extend(
                await asyncio.gather(*(self._manifests.by_digest(name, c.digest) for c in children))
            )
        fetched = await asyncio.gather(*(self._fetch(name, d, on_blob) for d in blobs))
        result.blobs = len(blobs)
        result.bytes = sum(b.size for b in blobs.values())
        result.fetched_blobs = sum(fetched)
        return result

    async def _fetch(self, name: str, digest: Digest, on_blob: Callable[[int], None]) -> bool:
        """Bring one blob in; True if it was not cached before."""
        async with self._turns:
            body = await self._blobs.open(name, digest)
            try:
                fetched = await body.keep()
                on_blob(body.size)
                return fetched
            finally:
                body.close()


def _chosen(child: Descriptor, wanted: list[tuple[str, str, str | None]]) -> bool:
    if not wanted:
        return True
    platform = child.platform or {}
    for os_name, arch, variant in wanted:
        if (
            platform.get("os") == os_name
            and platform.get("architecture") == arch
            and (variant is None or platform.get("variant") == variant)
        ):
            return True
    return False
