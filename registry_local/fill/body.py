"""A blob's body, as the cache hands it to a reader: its size, then its bytes.

Whatever is behind it (a committed file, a fill still growing, a small blob held
in memory, or the source itself when the cache has no room) a body is read the
same way: `fit` the requested ranges, `want` them all at once, then take
`pieces` of each in order. A piece is a stretch of an open file (for sendfile)
or bytes in memory. Every fallback stays in here: a fill that runs out of room
part-way goes on from the source where the reader is. The reader never learns
which kind of body it holds.

What is verified when (docs/security.md): the whole blob ([0, size)) is sent
only as it is verified, its last byte held back until the digest matched. A
range is sent as the source holds it, before the digest is checked, unless
`verified_ranges` (--verified-ranges): then a range of a blob still filling
waits for it to be committed, and without room in the cache a range short of
the end is answered with the whole blob, which can be verified.

    BlobBody               size, fit, want, pieces, keep, close
    ├── MemoryBody         a small committed blob, whole in memory
    ├── FileBody           a committed file, or a fill's growing file to follow
    └── DirectBody         streamed from the source, not cached (no room)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

from ..disk.store import DiskStore
from ..errors import RegistryError
from ..oci.byterange import ByteRange
from ..oci.digest import Digest
from .direct import DirectBlob
from .fill import Fill

__all__ = ["BlobBody", "BodySource", "DirectBody", "FileBody", "FileStretch", "MemoryBody", "Piece"]

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
        cannot be verified when it must be: then the whole blob, as RFC 9110
        allows)."""
        return requested

    def want(self, ranges: Sequence[ByteRange]) -> None:  # noqa: B027 (most have it all)
        """The reader will take these ranges, in this order: fetch them all now."""

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
    """A small committed blob, held whole in memory."""

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
        self,
        file: BinaryIO,
        size: int,
        fill: Fill | None,
        disk: DiskStore,
        digest: Digest,
        verified_ranges: bool = False,
    ) -> None:
        self._file = file
        self.size = size
        self._fill = fill
        self.source = "disk" if fill is None else "fill"
        self._disk = disk
        self._digest = digest
        self._verified_ranges = verified_ranges
        self._wanted: list[int] = []
        disk.pin(digest)

    def want(self, ranges: Sequence[ByteRange]) -> None:
        if self._fill is not None and not self._verified_ranges:
            self._wanted += [self._fill.want(r.start, r.end) for r in ranges if r.partial]

    async def pieces(self, start: int, end: int) -> AsyncGenerator[Piece, None]:
        fill = self._fill
        if fill is None:
            if start < end:
                yield FileStretch(self._file, start, end - start)
            return
        whole = start == 0 and end == self.size
        if not whole and self._verified_ranges and end < self.size:
            # Only verified bytes for ranges: a range short of the end has no
            # held-back byte to protect it, so it waits for the commit.
            await fill.committed()
        position = start
        while position < end:
            readable = await fill.reach(position, end, verified=whole or self._verified_ranges)
            if readable is None:
                # The fill ran out of disk: go on from the source where we are.
                direct = fill.direct()
                verify = whole or (self._verified_ranges and end == direct.size)
                async for chunk in direct.chunks(position, end, verify):
                    yield chunk
                return
            yield FileStretch(self._file, position, readable - position)
            position = readable

    async def keep(self) -> bool:
        if self._fill is None:
            return False
        if not await self._fill.kept():
            raise _no_room()
        return True

    def close(self) -> None:
        if self._fill is not None:
            for token in self._wanted:
                self._fill.unwant(token)
            self._wanted = []
        self._file.close()
        self._disk.unpin(self._digest)

    def abandon(self) -> None:
        self.close()
        if self._fill is not None:
            self._fill.abandon()


class DirectBody(BlobBody):
    """Streamed from the source (the bucket or an origin) while the cache has no room."""

    source: BodySource = "s3"

    def __init__(self, direct: DirectBlob, verified_ranges: bool = False) -> None:
        self._direct = direct
        self.size = direct.size
        self._verified_ranges = verified_ranges

    def fit(self, requested: ByteRange) -> ByteRange:
        if self._verified_ranges and requested.end < self.size:
            # Straight from the source, only a range reaching the end can be
            # verified: send the whole blob instead.
            return ByteRange(0, self.size, self.size)
        return requested

    async def pieces(self, start: int, end: int) -> AsyncGenerator[Piece, None]:
        whole = start == 0 and end == self.size
        verify = whole or (self._verified_ranges and end == self.size)
        async for chunk in self._direct.chunks(start, end, verify):
            yield chunk

    async def keep(self) -> bool:
        raise _no_room()


def _no_room() -> RegistryError:
    return RegistryError("no room in the cache for this image", status=507)
