"""Writing a whole image into the backing store, in the order `registry:2` does:
content first, then the links that name it, the tag last. A reader never finds
a link to content that is not there yet.
"""

from __future__ import annotations

import asyncio

from .digest import Digest
from .imagebuild import Image
from .storage.distribution import DistributionStore

__all__ = ["publish"]


async def publish(store: DistributionStore, name: str, tag: str | None, image: Image) -> None:
    async def put_blob(digest: Digest, data: bytes) -> None:
        await store.put_blob(digest, data)
        await store.link_blob(name, digest)

    async def put_manifest(digest: Digest, data: bytes) -> None:
        await store.put_blob(digest, data)
        await store.link_manifest(name, digest)

    await asyncio.gather(*(put_blob(d, data) for d, data in image.blobs.items()))
    # Children before the index that lists them.
    children = [(d, data) for d, data in image.manifests.items() if d != image.top]
    await asyncio.gather(*(put_manifest(d, data) for d, data in children))
    await put_manifest(image.top, image.top_manifest)
    if tag is not None:
        await store.tag(name, tag, image.top)
