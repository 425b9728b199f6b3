"""Distribution's registry tree, read and written through any Backend.

This is where "repository X links blob Y" and "tag T points at manifest M" are
answered the way `registry:2` answers them: by reading link objects whose body is
the digest. Keys come from layout.BucketLayout; the Backend only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from ..errors import BackendError, DigestInvalid
from ..layout import BucketLayout
from ..oci.digest import Digest
from .backend import Backend, ObjectStream

__all__ = ["DistributionStore"]

log = logging.getLogger(__name__)

_LINK_LIMIT = 1024
_LISTS_AT_ONCE = 16  # directory listings the catalog walk makes at once


class DistributionStore:
    """Reads and writes images in distribution's layout on a Backend."""

    def __init__(self, backend: Backend, layout: BucketLayout) -> None:
        self.backend = backend
        self.layout = layout

    # -- reads ---------------------------------------------------------------

    async def _read_link(self, key: str) -> Digest | None:
        body = await self.backend.read(key, _LINK_LIMIT)
        if body is None:
            return None
        try:
            return Digest.parse(body.decode("ascii", "replace").strip())
        except DigestInvalid:
            log.warning("ignoring malformed link object %s", key)
            return None

    async def _links_to(self, key: str, digest: Digest) -> bool:
        return await self._read_link(key) == digest

    async def blob_linked(self, name: str, digest: Digest) -> bool:
        """Whether the repository links the blob (its `_layers` link)."""
        return await self._links_to(self.layout.layer_link(name, digest), digest)

    async def manifest_linked(self, name: str, digest: Digest) -> bool:
        """Whether the repository links the manifest (its revision link)."""
        return await self._links_to(self.layout.revision_link(name, digest), digest)

    async def tag_target(self, name: str, tag: str) -> Digest | None:
        """The digest the tag's `current` link names, or None for no such tag."""
        return await self._read_link(self.layout.tag_current_link(name, tag))

    async def tag_written(self, name: str, tag: str) -> float | None:
        """When the tag's `current` link was last written (epoch seconds), or None."""
        return await self.backend.modified(self.layout.tag_current_link(name, tag))

    async def repositories(self, limit: int) -> tuple[list[str], bool]:
        """Repository names, sorted: every directory under repositories/ that
        holds a manifest or a tag (its `_manifests` directory holds an object),
        nested names too; `_` directories are not walked, as registry:2 walks
        the tree. At most `limit`; True if there were more. One LIST per
        directory, a level of the tree at a time, several at once."""
        root = self.layout.repositories()
        turns = asyncio.Semaphore(_LISTS_AT_ONCE)

        async def children(path: str) -> list[str]:
            async with turns:
                return await self.backend.list(root + path)

        found: list[str] = []
        level = [""]
        while level and len(found) <= limit:
            listed = await asyncio.gather(*(children(path) for path in level))
            deeper: list[str] = []
            for path, names in zip(level, listed, strict=True):
                if path and self.layout.is_repository(names):
                    found.append(path.rstrip("/"))
                deeper.extend(f"{path}{name}/" for name in names if not name.startswith("_"))
            level = deeper
        found.sort()
        return found[:limit], len(found) > limit

    async def tags(self, name: str) -> list[str] | None:
        """The repository's tags, sorted; None when the repository has none at all.
        A tag is there while its current link is (one listing of every key under
        the tags, a few per tag), whatever the store lists of emptied prefixes."""
        keys = await self.backend.walk(self.layout.tags_dir(name))
        names = sorted({tag for tag in map(self.layout.tag_of, keys) if tag is not None})
        if names:
            return names
        # A repository with no tags may still exist (pushed by digest): say [] then.
        if await self.backend.list(self.layout.repository(name)):
            return []
        return None

    async def _digests_under(self, directory: str) -> list[Digest]:
        """Digests named by `<alg>/<hex>/` directories under a prefix."""
        found: list[Digest] = []
        for algorithm in await self.backend.list(directory):
            for hex_ in await self.backend.list(f"{directory}{algorithm}/"):
                with contextlib.suppress(DigestInvalid):
                    found.append(Digest.parse(f"{algorithm}:{hex_}"))
        return found

    async def revisions(self, name: str) -> list[Digest]:
        """Every manifest the repository links (its revisions)."""
        return await self._digests_under(self.layout.revisions_dir(name))

    async def referrers(self, name: str, subject: Digest) -> list[Digest]:
        """The manifests registry-local linked as referring to `subject`."""
        return await self._digests_under(self.layout.referrers_dir(name, subject))

    async def blob_size(self, digest: Digest) -> int | None:
        return await self.backend.stat(self.layout.blob_data(digest))

    async def open_blob(
        self, digest: Digest, offset: int = 0, end: int | None = None
    ) -> ObjectStream | None:
        return await self.backend.open(self.layout.blob_data(digest), offset, end)

    async def read_blob(self, digest: Digest, limit: int) -> bytes | None:
        return await self.backend.read(self.layout.blob_data(digest), limit)

    # -- writes (the order matters: content before the links that name it) ---

    async def put_blob(self, digest: Digest, data: bytes) -> None:
        if Digest.of(data, digest.algorithm) != digest:
            raise BackendError("PutObject", str(digest), "content does not match digest")
        await self.backend.write(self.layout.blob_data(digest), data)

    async def put_blob_file(self, digest: Digest, path: Path) -> bool:
        """Store a verified file as the blob's data, unless the store has it
        already; True if it was written."""
        if await self.blob_size(digest) is not None:
            return False
        await self.backend.write_file(self.layout.blob_data(digest), path)
        return True

    async def link_blob(self, name: str, digest: Digest) -> None:
        await self.backend.write(self.layout.layer_link(name, digest), str(digest).encode())

    async def link_manifest(self, name: str, digest: Digest) -> None:
        await self.backend.write(self.layout.revision_link(name, digest), str(digest).encode())

    async def link_referrer(self, name: str, subject: Digest, referrer: Digest) -> None:
        key = self.layout.referrer_link(name, subject, referrer)
        await self.backend.write(key, str(referrer).encode())

    async def tag(self, name: str, tag: str, digest: Digest) -> None:
        link = str(digest).encode()
        await self.backend.write(self.layout.tag_index_link(name, tag, digest), link)
        await self.backend.write(self.layout.tag_current_link(name, tag), link)

    # -- deletes (links only, as registry:2 does; content is garbage-collected) --
    # Each leaves no emptied "directory" behind on stores that keep them, which
    # registry:2 would go on listing (a deleted tag in its tag list).

    async def _remove(self, key: str, root: str) -> None:
        await self.backend.delete(key)
        await self.backend.remove_emptied(key[: key.rfind("/") + 1], root)

    async def unlink_blob(self, name: str, digest: Digest) -> None:
        await self._remove(self.layout.layer_link(name, digest), self.layout.repositories())

    async def unlink_manifest(self, name: str, digest: Digest) -> None:
        await self._remove(self.layout.revision_link(name, digest), self.layout.repositories())

    async def unlink_referrer(self, name: str, subject: Digest, referrer: Digest) -> None:
        key = self.layout.referrer_link(name, subject, referrer)
        await self._remove(key, self.layout.repositories())

    async def untag(self, name: str, tag: str) -> None:
        directory = self.layout.tag_dir(name, tag)
        await self.backend.delete_tree(directory)
        await self.backend.remove_emptied(directory, self.layout.repositories())

    async def forget_tag_target(self, name: str, tag: str, digest: Digest) -> None:
        """Remove one of the tag's history links (the digest it pointed at once)."""
        key = self.layout.tag_index_link(name, tag, digest)
        await self._remove(key, self.layout.repositories())

    async def remove_blob(self, digest: Digest) -> None:
        """Remove a blob's content (garbage collection only)."""
        await self._remove(self.layout.blob_data(digest), self.layout.blobs())

    async def tags_of(self, name: str, digest: Digest) -> list[str]:
        """The repository's tags whose current target is the digest."""
        tags = await self.tags(name) or []
        targets = await asyncio.gather(*(self.tag_target(name, tag) for tag in tags))
        return [tag for tag, target in zip(tags, targets, strict=True) if target == digest]
