"""This host's cache dir: committed blobs, fills in progress, and what we learned
from the backing store (which repository links what, where tags point).

Blobs are content-addressed files; a blob exists in the cache only once its bytes
were verified, fsynced and renamed into `blobs/`. What is on disk is indexed in
memory at start (`open`), so lookups on the request path touch no disk.
Layout: see layout.CacheLayout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..digest import Digest
from ..errors import DigestInvalid
from .layout import CacheLayout

__all__ = ["LocalStore", "TagRecord", "TempBlob"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TagRecord:
    digest: Digest
    checked_at: float  # wall-clock time the backing store last confirmed it


class TempBlob:
    """A blob being written; lives in tmp/ until committed or discarded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LocalStore:
    """The cache dir. Create with `await LocalStore.open(path)`."""

    def __init__(self, layout: CacheLayout) -> None:
        self.layout = layout
        self._sizes: dict[Digest, int] = {}
        self._links: set[Path] = set()

    @classmethod
    async def open(cls, root: Path) -> LocalStore:
        """Prepare the cache dir: drop leftovers of a crash, index committed blobs."""
        store = cls(CacheLayout(root))
        await asyncio.to_thread(store._recover)
        return store

    def _recover(self) -> None:
        for directory in (self.layout.blobs_dir, self.layout.tmp_dir, self.layout.repositories_dir):
            directory.mkdir(parents=True, exist_ok=True)
        removed = 0
        for entry in os.scandir(self.layout.tmp_dir):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        if removed:
            log.info("removed %d partial files left by an earlier run", removed)
        for path, size in _walk_files(self.layout.blobs_dir):
            digest = self.layout.digest_of_blob_path(path)
            if digest is None:
                log.warning("ignoring stray file in the cache: %s", path)
                continue
            self._sizes[digest] = size
        log.info("cache index: %d blobs, %d bytes", len(self._sizes), self.bytes_used)

    # -- blobs ---------------------------------------------------------------

    @property
    def bytes_used(self) -> int:
        return sum(self._sizes.values())

    def blob_count(self) -> int:
        return len(self._sizes)

    def blob(self, digest: Digest) -> tuple[Path, int] | None:
        """Path and size of a committed blob, or None."""
        size = self._sizes.get(digest)
        if size is None:
            return None
        return self.layout.blob(digest), size

    def forget(self, digest: Digest) -> None:
        """Drop a blob from the index (its file vanished under us)."""
        self._sizes.pop(digest, None)

    def new_temp(self) -> TempBlob:
        return TempBlob(self.layout.tmp_dir / f"{uuid.uuid4().hex}.part")

    async def sync(self, temp: TempBlob) -> None:
        """Flush a temp file's bytes to disk and close it (before `publish`)."""
        await asyncio.to_thread(os.fsync, temp.fd)
        temp.close()

    def publish(self, temp: TempBlob, digest: Digest, size: int) -> Path:
        """Rename a synced, verified temp file into blobs/ and index it.

        Synchronous on purpose: callers switch the path readers open in the same
        step, so a reader sees either the temp file or the committed one.
        """
        return self._place(temp.path, digest, size)

    def _place(self, path: Path, digest: Digest, size: int) -> Path:
        final = self.layout.blob(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, final)
        self._sizes[digest] = size
        return final

    async def adopt(self, path: Path, digest: Digest, size: int) -> None:
        """Make a verified file elsewhere in the cache dir (a finished upload) a
        committed blob, by renaming it; if the blob is cached already, drop it."""
        if digest in self._sizes:
            await asyncio.to_thread(lambda: path.unlink(missing_ok=True))
            return

        def sync() -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        await asyncio.to_thread(sync)
        await self.sync_dir(self._place(path, digest, size))

    async def sync_dir(self, path: Path) -> None:
        """Make a rename into `path`'s directory durable."""
        await asyncio.to_thread(_fsync_dir, path.parent)

    async def commit(self, temp: TempBlob, digest: Digest, size: int) -> Path:
        """sync, publish and sync_dir in one step, for blobs nobody reads yet."""
        await self.sync(temp)
        final = self.publish(temp, digest, size)
        await self.sync_dir(final)
        return final

    def discard(self, temp: TempBlob) -> None:
        temp.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp.path)

    async def write_blob(self, digest: Digest, data: bytes) -> Path:
        """Commit a small blob held in memory (manifests); the caller verified it."""
        existing = self.blob(digest)
        if existing is not None:
            return existing[0]
        temp = self.new_temp()
        try:
            await asyncio.to_thread(_write_all, temp.fd, data)
            return await self.commit(temp, digest, len(data))
        except BaseException:
            self.discard(temp)
            raise

    async def read_blob(self, digest: Digest) -> bytes | None:
        """A committed blob's bytes (for small ones), or None if not cached."""
        found = self.blob(digest)
        if found is None:
            return None
        try:
            return await asyncio.to_thread(found[0].read_bytes)
        except FileNotFoundError:
            self.forget(digest)
            return None

    # -- what the backing store told us ----------------------------------------

    async def _has_marker(self, path: Path) -> bool:
        if path in self._links:
            return True
        if await asyncio.to_thread(path.exists):
            self._links.add(path)
            return True
        return False

    async def _add_marker(self, path: Path) -> None:
        if path in self._links:
            return

        def touch() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

        await asyncio.to_thread(touch)
        self._links.add(path)

    async def knows_blob_link(self, name: str, digest: Digest) -> bool:
        return await self._has_marker(self.layout.layer_marker(name, digest))

    async def remember_blob_link(self, name: str, digest: Digest) -> None:
        await self._add_marker(self.layout.layer_marker(name, digest))

    async def _remove_marker(self, path: Path) -> None:
        self._links.discard(path)
        await asyncio.to_thread(lambda: path.unlink(missing_ok=True))

    async def forget_blob_link(self, name: str, digest: Digest) -> None:
        await self._remove_marker(self.layout.layer_marker(name, digest))

    async def forget_manifest_link(self, name: str, digest: Digest) -> None:
        await self._remove_marker(self.layout.manifest_marker(name, digest))

    async def knows_manifest_link(self, name: str, digest: Digest) -> bool:
        return await self._has_marker(self.layout.manifest_marker(name, digest))

    async def remember_manifest_link(self, name: str, digest: Digest) -> None:
        await self._add_marker(self.layout.manifest_marker(name, digest))

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


def _walk_files(top: Path) -> list[tuple[Path, int]]:
    found = []
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    found.append((Path(entry.path), entry.stat(follow_symlinks=False).st_size))
    return found


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
