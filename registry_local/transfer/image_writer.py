"""Writing a whole image into the backing store, in the order `registry:2` does:
content first, then the links that name it, the tag last. A reader never finds
a link to content that is not there yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from ..backing.distribution import DistributionStore
from ..oci.digest import Digest
from ..oci.mediatypes import inspect_manifest

__all__ = ["ImageContent", "write_image"]

_CONCURRENT_BLOBS = 4


class ImageContent(Protocol):
    """An image to write: its manifests, and its blobs as bytes or verified files."""

    @property
    def top(self) -> Digest: ...

    @property
    def manifests(self) -> Mapping[Digest, bytes]: ...

    @property
    def blobs(self) -> Mapping[Digest, bytes] | Mapping[Digest, Path]: ...


async def write_image(
    store: DistributionStore,
    name: str,
    tag: str | None,
    image: ImageContent,
    on_blob: Callable[[Digest], None] = lambda _: None,
) -> None:
    turns = asyncio.Semaphore(_CONCURRENT_BLOBS)

    async def put_blob(digest: Digest, data: bytes | Path) -> None:
        async with turns:
            if isinstance(data, Path):
                await store.put_blob_file(digest, data)
            else:
                await store.put_blob(digest, data)
            await store.link_blob(name, digest)
        on_blob(digest)

    async def put_manifest(digest: Digest, data: bytes) -> None:
        await store.put_blob(digest, data)
        await store.link_manifest(name, digest)
        subject = inspect_manifest(data).subject
        if subject is not None:  # an artifact (signature, SBOM): findable as a referrer
            await store.link_referrer(name, subject.digest, digest)

    await asyncio.gather(*(put_blob(d, data) for d, data in image.blobs.items()))
    # Children before the index that lists them.
    children = [(d, data) for d, data in image.manifests.items() if d != image.top]
    await asyncio.gather(*(put_manifest(d, data) for d, data in children))
    await put_manifest(image.top, image.manifests[image.top])
    if tag is not None:
        await store.tag(name, tag, image.top)
