"""Serving a blob straight from the backing store, without caching it.

Used while the cache cannot take new blobs (disk full, limit unmeetable: see
disk/eviction.py). Reads resume after breaks like a fill's do; for a whole-blob
answer the digest is checked before the last chunk is sent, so corrupt content
is never served whole here either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..errors import DigestMismatch
from ..oci.digest import Digest
from .parts import Reads

__all__ = ["DirectBlob"]


class DirectBlob:
    """A blob of known size to stream from the backing store."""

    def __init__(self, reads: Reads, digest: Digest, size: int) -> None:
        self._reads = reads
        self.digest = digest
        self.size = size

    def _resumed(self) -> None:
        self._reads.metrics.fill_resumed(part=False)

    async def chunks(
        self, start: int, end: int, verify: bool | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes [start, end), in order. With `verify` (the default whenever the
        range reaches the blob's end) the blob is read from its first byte, so the
        digest is checked before the last chunk goes out, even when the caller
        needs only a tail. A range that stops short of the end cannot be checked:
        callers answer such requests with the whole blob instead."""
        verify = end == self.size if verify is None else verify
        if verify and end != self.size:
            raise ValueError("only a range that ends with the blob can be verified")
        hasher = self.digest.hasher() if verify else None
        position = 0 if verify else start
        held: bytes | None = None
        async with self._reads.chunks(
            self.digest, None, self._resumed, position, end, size=self.size
        ) as chunks:
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

    def close(self) -> None:
        """Nothing held open between chunks."""
