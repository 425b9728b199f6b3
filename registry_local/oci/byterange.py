"""Byte ranges: Range requests on blobs (RFC 9110 section 14, single ranges), and
the Content-Range and Range headers of chunked uploads (distribution-spec)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BlobUploadInvalid, RangeInvalid

__all__ = ["ByteRange", "parse_content_range", "parse_range", "upload_range"]

_SINGLE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
# "<start>-<end>" as the distribution-spec has it; "bytes <start>-<end>/<size>" tolerated.
_CONTENT_RANGE = re.compile(r"(?:bytes )?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes [start, end) of a blob of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def partial(self) -> bool:
        return self.start != 0 or self.end != self.size

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange:
    """The part of a blob to send.

    A missing, malformed or multi-range header asks for the whole blob (the RFC
    lets a server ignore what it does not understand); a well-formed single range
    that the blob cannot satisfy raises RangeInvalid (416).
    """
    whole = ByteRange(0, size, size)
    if header is None:
        return whole
    match = _SINGLE.fullmatch(header.strip())
    if match is None:
        return whole
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
        if last and int(last) < start:
            return whole  # syntactically invalid: ignore
    elif last:
        suffix = int(last)
        if suffix == 0:
            raise _unsatisfiable(size)
        start, end = max(size - suffix, 0), size
    else:
        return whole
    if start >= size:
        raise _unsatisfiable(size)
    return ByteRange(start, end, size)


def _unsatisfiable(size: int) -> RangeInvalid:
    return RangeInvalid(
        "requested range not satisfiable",
        detail={"size": size},
        headers={"Content-Range": f"bytes */{size}"},
    )


def parse_content_range(header: str | None) -> tuple[int, int] | None:
    """An upload chunk's inclusive byte range, None if absent; BlobUploadInvalid if garbled."""
    if header is None:
        return None
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None or int(match.group(2)) < int(match.group(1)):
        raise BlobUploadInvalid("invalid Content-Range", detail={"Content-Range": header[:100]})
    return int(match.group(1)), int(match.group(2))


def upload_range(size: int) -> str:
    """The Range header of an upload holding `size` bytes, as distribution writes it."""
    return f"0-{max(size - 1, 0)}"
