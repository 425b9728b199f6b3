"""Writing a whole image into the backing store, in the order `registry:2` does:
content first, then the links that name it, the tag last. A reader never finds
a link to content that is not there yet.
"""

from __future__ import annotations

from .imagebuild import Image
from .storage.distribution import DistributionStore

__all__ = ["publish"]


async def publish(store: DistributionStore, name: str, tag: str | None, image: Image) -> None:
    for digest, data in image.blobs.items():
        await store.put_blob(digest, data)
        await store.link_blob(name, digest)
    # Children before the index that lists them.
    for digest, data in sorted(image.manifests.items(), key=lambda kv: kv[0] == image.top):
        await store.put_blob(digest, data)
        await store.link_manifest(name, digest)
    if tag is not None:
        await store.tag(name, tag, image.top)
