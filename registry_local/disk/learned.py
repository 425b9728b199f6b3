"""What this host learned from the backing store, kept in the cache dir.

A link seen in the bucket (repository X links blob or manifest Y) is a marker
file, so after a restart it is known without asking S3 again. A tag's target is
a small file whose mtime is when the bucket last confirmed it, so the tag TTL
and stale-if-error survive restarts too. Layout: see layout.CacheLayout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import DigestInvalid
from ..layout import CacheLayout
from ..oci.digest import Digest

__all__ = ["CachedRepository", "Learned", "TagRecord", "cached_repositories"]


@dataclass(frozen=True, slots=True)
class TagRecord:
    """A tag's target, and when the backing store last confirmed it."""

    digest: Digest
    checked_at: float  # wall-clock time the backing store last confirmed it


@dataclass(frozen=True, slots=True)
class CachedRepository:
    """What this host knows of one repository."""

    name: str
    tags: dict[str, str]  # tag -> digest, as last confirmed
    manifests: int  # manifests it knows the repository links
    blobs: int  # blobs likewise


def cached_repositories(layout: CacheLayout) -> list[CachedRepository]:
    """The repositories this host has served from, sorted by name."""
    found: list[CachedRepository] = []

    def count(markers: Path) -> int:  # markers/<alg>/<hex>
        return sum(1 for _ in markers.glob("*/*")) if markers.is_dir() else 0

    for name in layout.cached_repository_names():
        tags: dict[str, str] = {}
        records = layout.tag_files(name)
        for record in sorted(records.iterdir()) if records.is_dir() else ():
            with contextlib.suppress(OSError):
                tags[record.name] = record.read_text().strip()
        found.append(
            CachedRepository(
                name,
                tags,
                count(layout.manifest_markers(name)),
                count(layout.layer_markers(name)),
            )
        )
    return found


class Learned:
    """Link markers and tag records under the cache dir's repositories/."""

    def __init__(self, layout: CacheLayout) -> None:
        self.layout = layout
        # Links known to exist, as plain tuples: the request path builds no Path.
        self._known: set[tuple[bool, str, Digest]] = set()

    @classmethod
    def create(cls, layout: CacheLayout) -> Learned:
        """The records of `layout`'s cache dir, its repositories/ made if missing."""
        layout.repositories_dir.mkdir(parents=True, exist_ok=True)
        return cls(layout)

    def _marker(self, manifest: bool, name: str, digest: Digest) -> Path:
        if manifest:
            return self.layout.manifest_marker(name, digest)
        return self.layout.layer_marker(name, digest)

    async def _has_marker(self, manifest: bool, name: str, digest: Digest) -> bool:
        key = (manifest, name, digest)
        if key in self._known:
            return True
        if await asyncio.to_thread(self._marker(manifest, name, digest).exists):
            self._known.add(key)
            return True
        return False

    async def _add_marker(self, manifest: bool, name: str, digest: Digest) -> None:
        key = (manifest, name, digest)
        if key in self._known:
            return
        path = self._marker(manifest, name, digest)

        def touch() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

        await asyncio.to_thread(touch)
        self._known.add(key)

    async def _remove_marker(self, manifest: bool, name: str, digest: Digest) -> None:
        self._known.discard((manifest, name, digest))
        path = self._marker(manifest, name, digest)
        await asyncio.to_thread(lambda: path.unlink(missing_ok=True))

    def knows_now(self, manifest: bool, name: str, digest: Digest) -> bool:
        """Whether the link is known without looking at the disk (in memory)."""
        return (manifest, name, digest) in self._known

    async def knows_blob_link(self, name: str, digest: Digest) -> bool:
        return await self._has_marker(False, name, digest)

    async def remember_blob_link(self, name: str, digest: Digest) -> None:
        await self._add_marker(False, name, digest)

    async def forget_blob_link(self, name: str, digest: Digest) -> None:
        await self._remove_marker(False, name, digest)

    async def knows_manifest_link(self, name: str, digest: Digest) -> bool:
        return await self._has_marker(True, name, digest)

    async def remember_manifest_link(self, name: str, digest: Digest) -> None:
        await self._add_marker(True, name, digest)

    async def forget_manifest_link(self, name: str, digest: Digest) -> None:
        await self._remove_marker(True, name, digest)

    async def tag(self, name: str, tag: str) -> TagRecord | None:
        """The last known target of a tag and when it was confirmed."""
        path = self.layout.tag_file(name, tag)

        def read() -> TagRecord | None:
            try:
                text = path.read_text("ascii").strip()
                checked_at = path.stat().st_mtime
            except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
                return None
            try:
                return TagRecord(Digest.parse(text), checked_at)
            except DigestInvalid:
                return None

        return await asyncio.to_thread(read)

    async def remember_tag(self, name: str, tag: str, digest: Digest) -> TagRecord:
        """Record a confirmed tag target; its mtime is the time of confirmation."""
        path = self.layout.tag_file(name, tag)
        now = time.time()

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            tmp.write_text(str(digest), "ascii")
            os.utime(tmp, (now, now))
            os.replace(tmp, path)

        await asyncio.to_thread(write)
        return TagRecord(digest, now)

    async def forget_tag(self, name: str, tag: str) -> None:
        path = self.layout.tag_file(name, tag)
        await asyncio.to_thread(lambda: path.unlink(missing_ok=True))
