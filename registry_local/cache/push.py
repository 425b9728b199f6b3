"""Pushes and deletes: written through to the backing store, then to this host.

Everything is written in distribution's layout and order: content, verified
against its digest, before the link that names it; manifests only once every
blob and child manifest they reference is linked in the repository; the tag
last. A push cut off at any point leaves no link or tag to anything missing.
A pushed blob becomes a committed blob of this host's cache as well, so the
pushing host never reads it back from S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from ..backing.distribution import DistributionStore
from ..config import PushSettings
from ..disk.store import DiskStore
from ..disk.uploads import Uploads, UploadSession
from ..errors import (
    BackendError,
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    RangeInvalid,
    SizeInvalid,
)
from ..oci.byterange import upload_range
from ..oci.digest import Digest
from ..oci.mediatypes import (
    MANIFEST_MEDIA_TYPES,
    SCHEMA1,
    SCHEMA1_SIGNED,
    ManifestInfo,
    inspect_manifest,
)
from .catalog import Catalog
from .links import LinkCache
from .manifests import Manifest, ManifestCache
from .referrers import Referrers, subject_of
from .wiring import Cache

__all__ = ["Pusher", "UploadSession", "open_pusher"]

log = logging.getLogger(__name__)

Chunks = AsyncIterator[bytes]


class Pusher:
    """Blob uploads, mounts, manifest pushes and deletes, written through to the backing
    store in distribution's order; see the module docstring."""

    def __init__(
        self,
        store: DistributionStore,
        disk: DiskStore,
        links: LinkCache,
        manifests: ManifestCache,
        uploads: Uploads,
        referrers: Referrers,
        catalog: Catalog,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._disk = disk
        self._links = links
        self._manifests = manifests
        self._referrers = referrers
        self.uploads = uploads

    # -- blob uploads ------------------------------------------------------------

    async def start(self, name: str, algorithm: str = "sha256") -> UploadSession:
        return await self.uploads.create(name, algorithm)

    async def session(self, name: str, upload_id: str) -> UploadSession:
        return await self.uploads.get(name, upload_id)

    async def append(
        self, name: str, upload_id: str, chunks: Chunks, content_range: tuple[int, int] | None
    ) -> UploadSession:
        """Add a chunk. With a Content-Range, it must start where the session ends."""
        session = await self.uploads.get(name, upload_id)
        async with session.lock:
            await self._append(session, chunks, content_range)
        return session

    async def _append(
        self, session: UploadSession, chunks: Chunks, content_range: tuple[int, int] | None
    ) -> None:
        if content_range is not None and content_range[0] != session.size:
            raise RangeInvalid(
                "chunk does not start where the upload ends",
                detail={"expected_start": session.size, "got": content_range[0]},
                headers={"Range": upload_range(session.size)},
            )
        before = session.size
        written = await self.uploads.append(session, chunks)
        if content_range is not None and written != content_range[1] - content_range[0] + 1:
            await self.uploads.truncate(session, before)
            raise SizeInvalid("chunk length does not match its Content-Range")

    async def finish(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        chunks: Chunks,
        content_range: tuple[int, int] | None,
    ) -> None:
        """Append the last chunk (if any), verify, and commit the blob."""
        session = await self.uploads.get(name, upload_id)
        async with session.lock:
            await self._append(session, chunks, content_range)
            actual = await self.uploads.digest(session, digest.algorithm)
            if actual != digest:
                await self.uploads.remove(session)
                raise DigestInvalid(detail={"expected": str(digest), "actual": str(actual)})
            await self._store.put_blob_file(digest, session.data)
            await self._store.link_blob(name, digest)
            await self._disk.adopt(session.data, digest, session.size)
            await self._links.learned_blob(name, digest)
            await self.uploads.remove(session)

    async def upload_whole(self, name: str, digest: Digest, chunks: Chunks) -> None:
        """A monolithic upload: POST with ?digest= and the blob as the body."""
        session = await self.uploads.create(name, digest.algorithm)
        try:
            await self.finish(name, session.id, digest, chunks, None)
        except BaseException:
            await self.uploads.remove(session)
            raise

    async def cancel(self, name: str, upload_id: str) -> None:
        await self.uploads.remove(await self.uploads.get(name, upload_id))

    async def mount(self, name: str, digest: Digest, source: str | None) -> bool:
        """Link a blob that another repository (`source`) links; False if it does
        not. Without a source (the spec's automatic content discovery), any blob
        the store holds: access here is per registry, not per repository, so a
        client that may push may read every blob already."""
        if source is not None and not await self._links.blob_linked(source, digest):
            return False
        if await self._store.blob_size(digest) is None:
            return False
        await self._store.link_blob(name, digest)
        await self._links.learned_blob(name, digest)
        return True

    # -- manifests ---------------------------------------------------------------

    async def put_manifest(
        self,
        name: str,
        reference: Digest | str,
        content_type: str,
        data: bytes,
        tags: Sequence[str] = (),
    ) -> Manifest:
        """Store and link the manifest and set its tags: the reference when it is
        a tag, and `tags` (a push by digest with `?tag=`), each valid already.
        A manifest with a subject is linked as its referrer too (referrers.py).

        A push by digest keeps the client's digest, of whatever algorithm; a
        push by tag names the manifest by its sha256 digest, as distribution
        does (the spec lets the digest differ then: the client named none)."""
        info = inspect_manifest(data)
        if info.media_type in (SCHEMA1, SCHEMA1_SIGNED):
            raise ManifestInvalid("schema1 manifests are not supported")
        declared = content_type.partition(";")[0].strip()
        if declared in MANIFEST_MEDIA_TYPES and declared != info.media_type:
            raise ManifestInvalid(
                "Content-Type does not match the manifest's media type",
                detail={"contentType": declared, "mediaType": info.media_type},
            )
        algorithm = reference.algorithm if isinstance(reference, Digest) else "sha256"
        digest = Digest.of(data, algorithm)
        if isinstance(reference, Digest) and reference != digest:
            raise DigestInvalid(detail={"expected": str(reference), "actual": str(digest)})
        missing = await self._missing_references(name, info)
        if missing:
            raise ManifestBlobUnknown(detail={"digests": missing})
        named = [reference] if isinstance(reference, str) else []
        tags = list(dict.fromkeys([*named, *tags]))
        await self._store.put_blob(digest, data)
        await self._store.link_manifest(name, digest)
        if info.subject is not None:
            await self._store.link_referrer(name, info.subject.digest, digest)
            self._referrers.forget(name, info.subject.digest)
        await self._tag_all(name, tags, digest)
        await self._links.learned_manifest(name, digest)
        manifest = Manifest(digest, data, info)
        await self._manifests.learned(manifest, name, tags)
        self._catalog.changed()
        return manifest

    async def _tag_all(self, name: str, tags: Sequence[str], digest: Digest) -> None:
        """Point every tag at the digest, or (when the store fails part-way)
        put those already moved back where they were: all or none."""
        before = await asyncio.gather(*(self._store.tag_target(name, tag) for tag in tags))
        done: list[tuple[str, Digest | None]] = []
        try:
            for tag, previous in zip(tags, before, strict=True):
                done.append((tag, previous))
                await self._store.tag(name, tag, digest)
        except BackendError:
            for tag, previous in reversed(done):
                with contextlib.suppress(BackendError):
                    if previous is None:
                        await self._store.untag(name, tag)
                    else:
                        await self._store.tag(name, tag, previous)
            raise

    async def _missing_references(self, name: str, info: ManifestInfo) -> list[str]:
        blobs = [d for d in info.blobs if not d.urls]  # foreign layers are not ours to have
        linked = await asyncio.gather(
            *(self._links.blob_linked(name, d.digest) for d in blobs),
            *(self._links.manifest_linked(name, d.digest) for d in info.manifests),
        )
        wanted = [*blobs, *info.manifests]
        return [str(d.digest) for d, ok in zip(wanted, linked, strict=True) if not ok]

    # -- deletes -----------------------------------------------------------------

    async def delete_manifest(self, name: str, reference: Digest | str) -> None:
        """Untag, or unlink a manifest and untag every tag naming it."""
        if isinstance(reference, str):
            if await self._store.tag_target(name, reference) is None:
                raise ManifestUnknown(detail={"tag": reference})
            await self._store.untag(name, reference)
            await self._manifests.forget_tag(name, reference)
            self._catalog.changed()
            return
        if not await self._links.manifest_linked(name, reference):
            raise ManifestUnknown(detail={"digest": str(reference)})
        subject = await subject_of(self._manifests, reference)
        await self._store.unlink_manifest(name, reference)
        if subject is not None:
            await self._store.unlink_referrer(name, subject, reference)
            self._referrers.forget(name, subject)
        for tag in await self._store.tags_of(name, reference):
            await self._store.untag(name, tag)
            await self._manifests.forget_tag(name, tag)
        await self._links.forget_manifest(name, reference)
        self._catalog.changed()

    async def delete_blob(self, name: str, digest: Digest) -> None:
        if not await self._links.blob_linked(name, digest):
            raise BlobUnknown(detail={"digest": str(digest)})
        await self._store.unlink_blob(name, digest)
        await self._links.forget_blob(name, digest)


@contextlib.asynccontextmanager
async def open_pusher(cache: Cache, settings: PushSettings) -> AsyncIterator[Pusher]:
    """The push API over `cache`, with abandoned upload sessions swept in the
    background while it is open."""
    uploads = Uploads.at(cache.disk.layout, settings.upload_expiry)
    janitor = asyncio.create_task(_expire_uploads(uploads, settings), name="upload expiry")
    try:
        yield Pusher(
            cache.store,
            cache.disk,
            cache.links,
            cache.manifests,
            uploads,
            cache.referrers,
            cache.catalog,
        )
    finally:
        janitor.cancel()


async def _expire_uploads(uploads: Uploads, settings: PushSettings) -> None:
    """Remove abandoned upload sessions now and then (a background task)."""
    while True:
        try:
            await uploads.expire()
        except OSError as exc:
            log.warning("could not sweep upload sessions: %s", exc)
        await asyncio.sleep(min(600.0, max(1.0, settings.upload_expiry / 10)))
