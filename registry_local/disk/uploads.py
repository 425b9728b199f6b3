"""Push sessions, staged on this host's disk until the blob is complete.

A session is a directory `uploads/<uuid>/` with the bytes so far (`data`) and
who it belongs to (`info.json`). Chunks are written and hashed as they arrive;
the hash state lives in memory, and after a restart the session is re-hashed
from its file when it completes, so sessions survive restarts. Sessions idle
longer than the expiry are removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BlobUploadUnknown
from ..layout import CacheLayout
from ..oci.digest import Digest

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["UploadSession", "Uploads"]

log = logging.getLogger(__name__)

_UUID_LENGTH = 36


@dataclass
class UploadSession:
    """One push session of a repository: its directory, the bytes received so far and
    their hash state."""

    id: str
    name: str
    directory: Path
    size: int = 0
    hasher: _Hash | None = None  # over bytes [0, size), while in memory
    algorithm: str = "sha256"  # the hasher's: the client's `digest-algorithm`
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def data(self) -> Path:
        return self.directory / "data"


class Uploads:
    """The sessions under the cache dir's uploads/."""

    def __init__(self, layout: CacheLayout, expiry: float) -> None:
        self._layout = layout
        self._expiry = expiry
        self._open: dict[str, UploadSession] = {}

    @classmethod
    def at(cls, layout: CacheLayout, expiry: float) -> Uploads:
        """The sessions of `layout`'s cache dir, its uploads/ made if missing."""
        layout.uploads_dir.mkdir(parents=True, exist_ok=True)
        return cls(layout, expiry)

    async def create(self, name: str, algorithm: str = "sha256") -> UploadSession:
        """A new session, hashing what arrives with `algorithm` (one of
        oci.digest.ALGORITHMS) as the blob's digest is expected to be."""
        upload_id = str(uuid.uuid4())
        directory = self._layout.upload_dir(upload_id)

        def make() -> None:
            directory.mkdir(parents=True)
            (directory / "data").touch()
            info = {"name": name, "started": time.time()}
            (directory / "info.json").write_text(json.dumps(info))

        await asyncio.to_thread(make)
        hasher = hashlib.new(algorithm)
        session = UploadSession(upload_id, name, directory, 0, hasher, algorithm)
        self._open[upload_id] = session
        return session

    async def get(self, name: str, upload_id: str) -> UploadSession:
        """The session, from memory or (after a restart) from disk."""
        session = self._open.get(upload_id)
        if session is None:
            session = await self._load(upload_id)
        if session is None or session.name != name:
            raise BlobUploadUnknown(detail={"uuid": upload_id[:_UUID_LENGTH]})
        return session

    async def _load(self, upload_id: str) -> UploadSession | None:
        try:
            if str(uuid.UUID(upload_id)) != upload_id:
                return None
        except ValueError:
            return None
        directory = self._layout.upload_dir(upload_id)

        def read() -> UploadSession | None:
            try:
                info = json.loads((directory / "info.json").read_text())
                size = (directory / "data").stat().st_size
            except (OSError, ValueError):
                return None
            return UploadSession(upload_id, str(info.get("name")), directory, size, None)

        session = await asyncio.to_thread(read)
        if session is not None:
            self._open[upload_id] = session
        return session

    async def append(self, session: UploadSession, chunks: AsyncIterator[bytes]) -> int:
        """Write chunks at the end of the session; the number of bytes written.

        If the body breaks off, what arrived is kept: the client can ask where
        the session stands and go on from there.
        """
        fd = await asyncio.to_thread(os.open, session.data, os.O_WRONLY | os.O_CLOEXEC)
        loop = asyncio.get_running_loop()
        written = 0
        try:
            async for chunk in chunks:
                await loop.run_in_executor(None, _write_at, fd, session.hasher, chunk, session.size)
                session.size += len(chunk)
                written += len(chunk)
        finally:
            await asyncio.to_thread(os.close, fd)
            await asyncio.to_thread(os.utime, session.directory)  # activity, for expiry
        return written

    async def truncate(self, session: UploadSession, size: int) -> None:
        """Drop bytes past `size` (a chunk that was refused after it arrived)."""
        await asyncio.to_thread(os.truncate, session.data, size)
        session.size = size
        session.hasher = None

    async def digest(self, session: UploadSession, algorithm: str) -> Digest:
        """The digest of everything uploaded, hashing the file if memory lost it."""
        if session.hasher is not None and algorithm == session.algorithm:
            return Digest(algorithm, session.hasher.copy().hexdigest())
        return await asyncio.to_thread(_hash_file, session.data, algorithm)

    async def remove(self, session: UploadSession) -> None:
        self._open.pop(session.id, None)
        await asyncio.to_thread(shutil.rmtree, session.directory, True)

    def forget(self, session: UploadSession) -> None:
        """The session's data was moved elsewhere; drop it from memory."""
        self._open.pop(session.id, None)

    async def expire(self) -> int:
        """Remove sessions idle longer than the expiry; how many were removed."""
        cutoff = time.time() - self._expiry
        busy = {s.id for s in self._open.values() if s.lock.locked()}

        def sweep() -> list[str]:
            removed = []
            for entry in os.scandir(self._layout.uploads_dir):
                if entry.name in busy:
                    continue
                try:
                    idle = entry.stat().st_mtime < cutoff
                except FileNotFoundError:
                    continue
                if idle:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.name)
            return removed

        removed = await asyncio.to_thread(sweep)
        for upload_id in removed:
            self._open.pop(upload_id, None)
        if removed:
            log.info("removed %d abandoned upload sessions", len(removed))
        return len(removed)


def _write_at(fd: int, hasher: _Hash | None, chunk: bytes, offset: int) -> None:
    if hasher is not None:
        hasher.update(chunk)
    view = memoryview(chunk)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _hash_file(path: Path, algorithm: str) -> Digest:
    hasher = Digest(algorithm, "").hasher()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            hasher.update(block)
    return Digest(algorithm, hasher.hexdigest())
