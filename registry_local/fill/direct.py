"""Serving a blob straight from its source, without caching it.

Used while the cache cannot take new blobs (disk full, limit unmeetable: see
disk/eviction.py). Reads resume after breaks like a fill's do. For a
whole-blob answer the digest is checked before the last chunk is sent, so
corrupt content is never served whole here either; a range is read as the
source holds it, just that range, as a fill serves ranges.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..backing.backend import ObjectStream
from ..errors import DigestMismatch
from ..oci.digest import Digest
from .reading import Reading, read_resuming
from .sources import Source

__all__ = ["DirectBlob"]


class DirectBlob:
    """A blob of known size to stream from its source."""

    def __init__(self, source: Source, reading: Reading, digest: Digest, size: int) -> None:
        self._source = source
        self._reading = reading
        self.digest = digest
        self.size = size

    def _resumed(self) -> None:
        self._reading.metrics.resumed(part=False)

    async def _open(self, offset: int, end: int | None) -> ObjectStream | None:
        return await self._source.open(offset, end, self, False)

    async def chunks(self, start: int, end: int, verify: bool) -> AsyncIterator[bytes]:
        """Bytes [start, end), in order. With `verify` (only for a range that ends
        with the blob) the blob is read from its first byte, so the digest is
        checked before the last chunk goes out, even when the caller needs only
        a tail."""
        if verify and end != self.size:
            raise ValueError("only a range that ends with the blob can be verified")
        hasher = self.digest.hasher() if verify else None
        position = 0 if verify else start
        held: bytes | None = None
        reads = read_resuming(
            self._open,
            self.digest,
            self._reading.retry,
            self._resumed,
            position,
            end,
            size=self.size,
        )
        async with contextlib.aclosing(reads) as chunks:
            async for chunk in chunks:
                if hasher is not None:
                    hasher.update(chunk)
                if position < start:  # the head, read only for the digest
                    skip = min(len(chunk), start - position)
                    position += skip
                    chunk = chunk[skip:]
                    if not chunk:
                        continue
                position += len(chunk)
                if held is not None:
                    yield held
                held = chunk
        if hasher is not None and not self.digest.matches(hasher):
            raise DigestMismatch(str(self.digest), f"{self.digest.algorithm}:{hasher.hexdigest()}")
        if held is not None:
            yield held
