"""A blob's body, as the cache hands it to a reader: its size, then its bytes.

Whatever is behind it (a committed file, a fill still growing, a small blob held
in memory, or the backing store when the cache has no room) a body is read the
same way: `fit` the requested range, then take `pieces` in order. A piece is a
stretch of an open file (for sendfile) or bytes in memory. Every fallback stays
in here: a fill that runs out of room part-way goes on from the backing store
where the reader is, and a range that cannot be verified is widened to the whole
blob. The reader never learns which kind of body it holds.

    BlobBody               size, fit, pieces, keep, close
    ├── MemoryBody         a small committed blob, whole in memory
    ├── FileBody           a committed file, or a fill's growing file to follow
    └── DirectBody         streamed from the backing store, not cached (no room)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from ..disk.store import DiskStore
from ..errors import RegistryError
from ..oci.byterange import ByteRange
from ..oci.digest import Digest
from .direct import DirectBlob
from .fill import Fill, NoRoom

__all__ = ["BlobBody", "BodySource", "FileStretch", "Piece"]

BodySource = Literal["disk", "fill", "s3"]


@dataclass(frozen=True, slots=True)
class FileStretch:
    """`count` bytes of `file` from `offset`, ready to send as they are."""

    file: BinaryIO
    offset: int
    count: int


Piece = FileStretch | bytes


class BlobBody(ABC):
    """One reader's view of one blob; see the module docstring. Close it when done."""

    size: int
    #: where the bytes come from, for the bytes-served metric
    source: BodySource
    #: the whole blob when it is in memory: a reader may send it in one write
    whole: bytes | None = None

    def fit(self, requested: ByteRange) -> ByteRange:
        """The range this body will send for `requested` (the same, unless it
        cannot be verified: then the whole blob, as RFC 9110 allows)."""
        return requested

    @abstractmethod
    def pieces(self, start: int, end: int) -> AsyncGenerator[Piece, None]:
        """Bytes [start, end) in order. Raises FillFailed or BackendError part-way
        when the blob cannot be delivered whole (the reader cuts the body short).
        The reader sends each piece in full before taking the next."""

    async def keep(self) -> bool:
        """Wait until the blob is committed to this host's cache; True if it was
        not there when this body was opened. Raises RegistryError (507) when the
        cache has no room for it."""
        return False

    def close(self) -> None:  # noqa: B027 (most bodies hold nothing open)
        """Release what the body holds open."""

    def abandon(self) -> None:
        """Close a body that will not be read (its request turned out unlinked):
        also stop a fill that nobody else is waiting for."""
        self.close()


class MemoryBody(BlobBody):
    source: BodySource = "disk"

    def __init__(self, data: bytes) -> None:
        self.whole = data
        self.size = len(data)

    async def pieces(self, start: int, end: int) -> AsyncGenerator[Piece, None]:
        assert self.whole is not None
        yield self.whole[start:end]


class FileBody(BlobBody):
    """A committed file, or the growing file of `fill`. While it is open the blob
    is pinned: eviction leaves it alone."""

    def __init__(
        self, file: BinaryIO, size: int, fill: Fill | None, disk: DiskStore, digest: Digest
    ) -> None:
        self._file = file
        self.size = size
        self._fill = fill
        self.source = "disk" if fill is None else "fill"
        self._disk = disk
        self._digest = digest
        disk.pin(digest)

    async def pieces(self, start: int, end: int) -> AsyncGenerator[Piece, None]:
        fill = self._fill
        if fill is None:
            if start < end:
                yield FileStretch(self._file, start, end - start)
            return
        if end < self.size:
            # A range short of the end gets no held-back byte to protect it: wait
            # until the fill has verified and committed the blob.
            await fill.committed()
        position = start
        while position < end:
            try:
                readable = min(await fill.readable_beyond(position), end)
            except NoRoom:
                # The fill ran out of disk: go on from the backing store where we are.
                direct = fill.direct()
                async for chunk in direct.chunks(position, end, end == direct.size):
                    yield chunk
                return
            yield FileStretch(self._file, position, readable - position)
            position = readable

    async def keep(self) -> bool:
        if self._fill is None:
            return False
        try:
            await self._fill.committed()
        except NoRoom:
            raise _no_room() from None
        return True

    def close(self) -> None:
        self._file.close()
        self._disk.unpin(self._digest)

    def abandon(self) -> None:
        self.close()
        if self._fill is not None:
            self._fill.abandon()


class DirectBody(BlobBody):
    """Streamed from the backing store (or an origin) while the cache has no room."""

    source: BodySource = "s3"

    def __init__(self, direct: DirectBlob) -> None:
        self._direct = direct
        self.size = direct.size

    def fit(self, requested: ByteRange) -> ByteRange:
        if requested.end < self.size:
            # Straight from the store, only a range reaching the end can be
            # verified: send the whole blob instead.
            return ByteRange(0, self.size, self.size)
        return requested

    async def pieces(self, start: int, end: int) -> AsyncGenerator[Piece, None]:
        async for chunk in self._direct.chunks(start, end):
            yield chunk

    async def keep(self) -> bool:
        raise _no_room()


def _no_room() -> RegistryError:
    return RegistryError("no room in the cache for this image", status=507)
