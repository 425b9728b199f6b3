"""This host's cached content: committed blobs and manifests, and fills in progress.

Content is addressed by digest; it exists in the cache only once its bytes were
verified, fsynced and renamed into `blobs/` (or `manifests/`). What is on disk is
indexed in memory at start, with each file's size and last access, so lookups
on the request path touch no disk. Last access lives in the file's mtime,
written at most every few minutes per blob, so LRU order survives restarts.

Other processes may share the cache dir (`warm`, `verify`, `prune`): a file
that appeared is found on a miss (`discover`), a file that vanished is
forgotten when opening it fails, and `reconcile` rescans now and then. Temp
files carry their process id, so a starting server removes only the leftovers
of processes that are gone. Layout: see layout.CacheLayout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..layout import CacheLayout
from ..oci.digest import ALGORITHMS, Digest

__all__ = ["DiskStore", "Entry", "TempBlob"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_HEX = re.compile(r"[0-9a-f]+")

# Write a blob's last access to disk at most this often (seconds).
TOUCH_INTERVAL = 300.0


@dataclass(slots=True)
class Entry:
    """The in-memory index's record of one committed file: its size, its last access (as
    known and as written to its mtime), whether it is a manifest, its path."""

    size: int
    accessed: float  # last access, wall clock
    persisted: float  # last access as written to the file's mtime
    manifest: bool = False
    path: str | None = None  # the file, once asked for (kept: no Path per request)


class TempBlob:
    """A blob being written; lives in tmp/ until committed or discarded."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self._flushing: asyncio.Future[None] | None = None

    @classmethod
    def create(cls, path: Path) -> TempBlob:
        """A new, empty temp file at `path` (which must not exist)."""
        return cls(path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(fd, *args)` in a thread, on a duplicate of the file's descriptor
        that the thread closes. A task awaiting it may be cancelled while the
        thread runs on, and then close this blob; the thread's own descriptor
        still names this file, where the number just closed could by then name
        another file, opened meanwhile, that the thread would write into."""
        fd = os.dup(self.fd)
        return await asyncio.get_running_loop().run_in_executor(None, _on_own_fd, work, fd, args)

    def flush_behind(self) -> None:
        """Start writing what is written so far to disk, in the background, unless
        that is already under way: the sync before commit then has little left
        (a 1 GiB blob would otherwise wait for a whole 1 GiB flush at the end).
        Errors are the final sync's to report."""
        if self._flushing is None or self._flushing.done():
            fd = os.dup(self.fd)  # the thread's own (see `run`)
            self._flushing = asyncio.get_running_loop().run_in_executor(
                _flushers(), _on_own_fd, _flush, fd, ()
            )

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _on_own_fd(work: Callable[..., T], fd: int, args: tuple[Any, ...]) -> T:
    try:
        return work(fd, *args)
    finally:
        os.close(fd)


@functools.cache
def _flushers() -> ThreadPoolExecutor:
    """Threads of their own for flushes behind fills, which wait for the disk:
    they never hold up the default executor's writes and hashes."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="flush-behind")


def _flush(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.fdatasync(fd)


class DiskStore:
    """The cache dir's content. Create with `await DiskStore.open(path)`."""

    def __init__(self, layout: CacheLayout) -> None:
        self.layout = layout
        self._index: dict[Digest, Entry] = {}
        self._pins: dict[Digest, int] = {}
        self._used = 0

    @classmethod
    async def open(cls, root: Path) -> DiskStore:
        """Prepare the cache dir: drop leftovers of a crash, index what is committed."""
        store = cls(CacheLayout(root))
        began = time.monotonic()
        await asyncio.to_thread(store._recover)
        log.info(
            "cache index: %d blobs, %d bytes, built in %.2fs",
            len(store._index),
            store.bytes_used,
            time.monotonic() - began,
        )
        return store

    def _recover(self) -> None:
        for directory in (self.layout.blobs_dir, self.layout.manifests_dir, self.layout.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        _remove_orphaned_temps(self.layout.tmp_dir)
        self._index = self._scan()
        self._used = sum(e.size for e in self._index.values())

    def _scan(self) -> dict[Digest, Entry]:
        """Index <top>/<alg>/<hex[0:2]>/<hex> under blobs/ and manifests/. The fixed
        depth keeps this to one scandir per directory and one stat per file."""
        found: dict[Digest, Entry] = {}
        for manifest, top in ((False, self.layout.blobs_dir), (True, self.layout.manifests_dir)):
            for algorithm in _subdirs(top):
                length = ALGORITHMS.get(algorithm.name)
                if length is None:
                    log.warning("ignoring stray directory in the cache: %s", algorithm.path)
                    continue
                for prefix in _subdirs(Path(algorithm.path)):
                    with os.scandir(prefix.path) as files:
                        for file in files:
                            name = file.name
                            if (
                                len(name) != length
                                or name[:2] != prefix.name
                                or not _HEX.fullmatch(name)
                                or not file.is_file(follow_symlinks=False)
                            ):
                                log.warning("ignoring stray file in the cache: %s", file.path)
                                continue
                            st = file.stat(follow_symlinks=False)
                            digest = Digest(algorithm.name, name)
                            found[digest] = Entry(st.st_size, st.st_mtime, st.st_mtime, manifest)
        return found

    async def reconcile(self) -> None:
        """Rescan the disk: pick up what other processes added, drop what they removed."""
        on_disk = await asyncio.to_thread(self._scan)
        for digest, entry in self._index.items():
            seen = on_disk.get(digest)
            if seen is not None:
                seen.accessed = max(seen.accessed, entry.accessed)
                seen.persisted = entry.persisted
        self._index = on_disk
        self._used = sum(e.size for e in on_disk.values())

    # -- the index -----------------------------------------------------------------

    @property
    def bytes_used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._index)

    def entries(self) -> list[tuple[Digest, Entry]]:
        """A snapshot of the index, for eviction."""
        return list(self._index.items())

    def _path(self, digest: Digest, manifest: bool) -> Path:
        return self.layout.manifest(digest) if manifest else self.layout.blob(digest)

    def blob(self, digest: Digest) -> tuple[str, int] | None:
        """Path and size of a committed blob, or None."""
        entry = self._index.get(digest)
        if entry is None or entry.manifest:
            return None
        if entry.path is None:
            entry.path = str(self.layout.blob(digest))
        return entry.path, entry.size

    def _add(self, digest: Digest, size: int, manifest: bool) -> None:
        now = time.time()
        old = self._index.get(digest)
        if old is not None:
            self._used -= old.size
        self._index[digest] = Entry(size, now, now, manifest)
        self._used += size

    def forget(self, digest: Digest) -> None:
        """Drop an entry whose file vanished under us."""
        entry = self._index.pop(digest, None)
        if entry is not None:
            self._used -= entry.size

    async def discover(self, digest: Digest, manifest: bool = False) -> bool:
        """Index a file another process committed since we last looked."""
        path = self._path(digest, manifest)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return False
        self._add(digest, st.st_size, manifest)
        return True

    async def touch(self, digest: Digest) -> None:
        """Note an access; write it to the file's mtime if the last write is old."""
        entry = self._index.get(digest)
        if entry is None:
            return
        entry.accessed = time.time()
        if entry.accessed - entry.persisted < TOUCH_INTERVAL:
            return
        entry.persisted = entry.accessed
        path = self._path(digest, entry.manifest)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.utime, path, (entry.accessed, entry.accessed))

    def pin(self, digest: Digest) -> None:
        """Keep a blob from eviction while it is read (reference counted)."""
        self._pins[digest] = self._pins.get(digest, 0) + 1

    def unpin(self, digest: Digest) -> None:
        count = self._pins.get(digest, 0) - 1
        if count > 0:
            self._pins[digest] = count
        else:
            self._pins.pop(digest, None)

    def pinned(self, digest: Digest) -> bool:
        return digest in self._pins

    async def remove(self, digest: Digest) -> int:
        """Delete a committed blob unless it is pinned; the bytes freed."""
        entry = self._index.get(digest)
        if entry is None or self.pinned(digest):
            return 0
        self.forget(digest)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(digest, entry.manifest).unlink)
        return entry.size

    # -- writing ---------------------------------------------------------------------

    def new_temp(self) -> TempBlob:
        return TempBlob.create(self.layout.tmp_dir / f"{os.getpid()}.{uuid.uuid4().hex}.part")

    async def sync(self, temp: TempBlob) -> None:
        """Flush a temp file's bytes to disk and close it (before `commit`)."""
        await temp.run(os.fsync)
        temp.close()

    def commit(self, temp: TempBlob, digest: Digest, size: int) -> Path:
        """Rename a synced, verified temp file into blobs/ and index it.

        Synchronous on purpose: callers switch the path readers open in the same
        step, so a reader sees either the temp file or the committed one.
        """
        return self._place(temp.path, digest, size, manifest=False)

    def _place(self, path: Path, digest: Digest, size: int, manifest: bool) -> Path:
        final = self._path(digest, manifest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, final)
        self._add(digest, size, manifest)
        return final

    async def sync_dir(self, path: Path) -> None:
        """Make a rename into `path`'s directory durable."""
        await asyncio.to_thread(_fsync_dir, path.parent)

    async def adopt(self, path: Path, digest: Digest, size: int) -> None:
        """Make a verified file elsewhere in the cache dir (a finished upload) a
        committed blob, by renaming it; if the blob is cached already, drop it."""
        if self.blob(digest) is not None:
            await asyncio.to_thread(lambda: path.unlink(missing_ok=True))
            return

        def sync() -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        await asyncio.to_thread(sync)
        await self.sync_dir(self._place(path, digest, size, manifest=False))

    def discard(self, temp: TempBlob) -> None:
        temp.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp.path)

    # -- manifests: small, whole in memory ---------------------------------------------

    async def write_manifest(self, digest: Digest, data: bytes) -> None:
        """Commit a verified manifest."""
        entry = self._index.get(digest)
        if entry is not None and entry.manifest:
            return
        temp = self.new_temp()
        try:
            await temp.run(_write_all, data)
            await self.sync(temp)
            final = self._place(temp.path, digest, len(data), manifest=True)
        except BaseException:
            self.discard(temp)
            raise
        await self.sync_dir(final)

    async def read_manifest(self, digest: Digest) -> bytes | None:
        """A committed manifest's bytes, or None if it is not cached."""
        entry = self._index.get(digest)
        if entry is None or not entry.manifest:
            if not await self.discover(digest, manifest=True):
                return None
        try:
            data = await asyncio.to_thread(self.layout.manifest(digest).read_bytes)
        except FileNotFoundError:
            self.forget(digest)
            return None
        await self.touch(digest)
        return data


_STALE_TEMP = 86400.0  # a temp file this old is abandoned whoever owns it


def _remove_orphaned_temps(tmp: Path) -> None:
    """Remove temp files whose writing process is gone (a crash, a kill -9)."""
    removed = 0
    now = time.time()
    for entry in os.scandir(tmp):
        owner = entry.name.split(".", 1)[0]
        with contextlib.suppress(FileNotFoundError):
            young = now - entry.stat().st_mtime < _STALE_TEMP
            if owner.isdigit() and int(owner) != os.getpid() and _alive(int(owner)) and young:
                continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed += 1
    if removed:
        log.info("removed %d partial files left by an earlier run", removed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as entries:
        return [e for e in entries if e.is_dir(follow_symlinks=False)]


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
