"""The narrow interface every backing store implements (S3, a directory, test doubles).

Keys are opaque strings built by layout.py; a backend never interprets them
beyond mapping them onto its own namespace. `create` and `replace` are
conditional writes (compare-and-set on an object's version), the primitive
hosts coordinate through (fleet/leases.py). An absent object is `None`, not an
exception: only failures raise, and they raise BackendUnavailable (worth a retry)
or BackendError (it is not).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

__all__ = ["Backend", "Listed", "ObjectStream"]


class ObjectStream(Protocol):
    """An open read of one object, from some offset to its end (or to a bound)."""

    @property
    def size(self) -> int:
        """Size of the whole object, not of what is left to read."""

    async def read(self, n: int) -> bytes:
        """Up to n bytes, as soon as some are there; b"" at the end.

        Raises BackendUnavailable when the stream breaks or stalls, including
        when it ends before `size` bytes were delivered.
        """

    async def close(self) -> None:
        """Release the connection; safe to call twice."""


class Listed(NamedTuple):
    """An object as a listing shows it."""

    name: str  # relative to the prefix listed
    modified: float  # seconds since the epoch, the store's clock
    size: int


class Backend(Protocol):
    """A key/value store holding distribution's tree."""

    @property
    def description(self) -> str:
        """Where the store is, for logs (never a credential)."""

    async def stat(self, key: str) -> int | None:
        """Size of the object, or None if there is none. Raises BackendError."""

    async def modified(self, key: str) -> float | None:
        """When the object was last written (seconds since the epoch, the store's
        clock), or None if there is none. Raises BackendError."""

    async def read(self, key: str, limit: int) -> bytes | None:
        """The whole object, or None if absent. Raises BackendError, also when
        the object is larger than `limit` bytes."""

    async def open(self, key: str, offset: int = 0, end: int | None = None) -> ObjectStream | None:
        """A stream of the object's bytes [offset, end) (to its end when `end` is
        None or past it), or None if absent. Raises BackendError; an offset at or
        past the end gives an empty stream. S3: one ranged GetObject."""

    async def walk(self, prefix: str) -> list[str]:
        """Keys of every object under a directory-like prefix ending in "/",
        relative to it, sorted. Raises BackendError."""

    async def walk_dated(self, prefix: str) -> list[Listed]:
        """As `walk`, each key with when its object was last written (seconds
        since the epoch, the store's clock) and its size, from the listing
        itself (S3: ListObjectsV2's LastModified and Size). Raises BackendError."""

    async def list(self, prefix: str) -> list[str]:
        """Names of the immediate children of a directory-like prefix ending in
        "/" that hold at least one object, sorted; [] when there are none. A
        "directory" whose last object was deleted is not a child (some stores
        go on listing it: the backend checks). Raises BackendError."""

    async def write(self, key: str, data: bytes) -> None:
        """Store a small object whole, atomically. Raises BackendError."""

    async def create(self, key: str, data: bytes) -> str | None:
        """Store a small object only if there is none under `key`: its version, or
        None when there is one already (S3: PutObject with If-None-Match: *).
        Raises BackendError."""

    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        """Store a small object only if the one under `key` is still at `version`:
        the new version, or None when it changed or is gone (S3: If-Match).
        Raises BackendError."""

    async def read_versioned(self, key: str, limit: int) -> tuple[bytes, str] | None:
        """The whole object and its version, or None if absent. Raises
        BackendError, also when the object is larger than `limit` bytes."""

    async def write_file(
        self, key: str, path: Path, start: int = 0, end: int | None = None
    ) -> None:
        """Store bytes [start, end) of a local file (to its end when `end` is None
        or past it) as an object, read from the file as they are sent (S3:
        multipart above a threshold), so memory stays bounded whatever the size.
        Raises BackendError."""

    async def compose(self, key: str, sources: Sequence[str]) -> None:
        """Store under `key` the bytes of the objects `sources`, in order, without
        moving them through this host (S3: a multipart upload whose parts are
        copied server-side, UploadPartCopy: every source but the last must be at
        least 5 MiB). Raises BackendError."""

    async def delete(self, key: str) -> None:
        """Remove one object; absent is fine. Raises BackendError."""

    async def delete_tree(self, prefix: str) -> None:
        """Remove every object under a directory-like prefix ending in "/".
        Raises BackendError."""

    async def remove_emptied(self, prefix: str, root: str) -> None:
        """On a store that keeps a "directory" once its last object is gone
        (SeaweedFS; a directory tree), remove what is left of a directory-like
        prefix that holds no object: it, every directory under it, then its
        parents up to `root` (kept) while they hold none either. Others list
        such prefixes by delimiter (registry:2's tag list does). Nothing is done
        where a prefix still holds an object, nor on a store that keeps no
        directories (AWS S3). Raises BackendError."""

    async def check(self) -> None:
        """Cheap reachability probe. Raises BackendError when unreachable."""
