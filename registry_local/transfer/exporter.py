"""`registry-local export`: an image from the backing store into an OCI image layout."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..backing.distribution import DistributionStore
from ..errors import ManifestUnknown
from ..oci.digest import Digest
from ..oci.mediatypes import MAX_MANIFEST_BYTES, Descriptor, inspect_manifest
from ..progress import Progress
from .files import SourceError
from .oci_layout import LAYOUT_FILE, blob_name, layout_index, oci_copies

__all__ = ["export_image"]


async def export_image(store: DistributionStore, name: str, tag: str, dest: Path) -> Digest:
    """Write every manifest and blob of `name:tag`, verified, and an index.json
    (oci_layout.py: with OCI-typed copies of Docker-typed manifests)."""
    top = await store.tag_target(name, tag)
    if top is None:
        raise ManifestUnknown(f"no tag {name}:{tag} in the backing store")
    manifests: dict[Digest, bytes] = {}
    blobs: dict[Digest, Descriptor] = {}
    pending = [top]
    while pending:
        digest = pending.pop()
        data = await store.read_blob(digest, MAX_MANIFEST_BYTES)
        if data is None or Digest.of(data, digest.algorithm) != digest:
            raise SourceError(f"manifest {digest} is missing or corrupt in the backing store")
        manifests[digest] = data
        info = inspect_manifest(data)
        pending.extend(c.digest for c in info.manifests if c.digest not in manifests)
        blobs.update((b.digest, b) for b in info.blobs if not b.urls)

    progress = Progress(f"exporting {name}:{tag}", sum(b.size for b in blobs.values()), len(blobs))
    copies, copy = oci_copies(manifests, top)
    manifests.update(copies)
    for digest, data in manifests.items():
        await asyncio.to_thread(_write, dest / blob_name(digest), data)
    for digest in blobs:
        await _copy_blob(store, digest, dest / blob_name(digest), progress)
        progress.item_done(str(digest))
    progress.finish()
    index = layout_index(manifests, top, tag, copy)
    await asyncio.to_thread(_write, dest / "index.json", index)
    await asyncio.to_thread(_write, dest / "oci-layout", LAYOUT_FILE)
    return top


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _copy_blob(
    store: DistributionStore, digest: Digest, target: Path, progress: Progress
) -> None:
    stream = await store.open_blob(digest)
    if stream is None:
        raise SourceError(f"blob {digest} is missing from the backing store")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    hasher = digest.hasher()
    out = await asyncio.to_thread(partial.open, "wb")
    try:
        while chunk := await stream.read(1 << 20):
            hasher.update(chunk)
            await asyncio.to_thread(out.write, chunk)
            progress.advance(len(chunk))
    finally:
        await stream.close()
        await asyncio.to_thread(out.close)
    if not digest.matches(hasher):
        partial.unlink()
        raise SourceError(f"blob {digest} in the backing store does not match its digest")
    partial.rename(target)
