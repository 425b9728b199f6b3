"""Byte ranges: Range requests on blobs (RFC 9110 section 14: one range or several,
answered with multipart/byteranges), and the Content-Range and Range headers of
chunked uploads (distribution-spec)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BlobUploadInvalid, RangeInvalid, TooManyRanges

__all__ = [
    "MAX_RANGES",
    "ByteRange",
    "RangeRequest",
    "parse_content_range",
    "parse_ranges",
    "upload_range",
]

# Ranges one request may ask for once overlapping and adjacent ones are merged.
# Lazy pullers ask for a few dozen at most; past this the request is refused
# with 400, which stargz-snapshotter answers by asking for one range instead
# (docs/api.md): a 200 with the whole blob would move a layer nobody wanted whole.
MAX_RANGES = 128

_SPEC = re.compile(r"(\d{0,19})-(\d{0,19})")
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


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """The byte ranges a Range header asks for, before the blob's size is known:
    (first, last) pairs, inclusive as written; (None, n) is the last n bytes.
    A pair whose last byte comes before its first (`500-0`) is invalid (RFC 9110
    section 14.1.1) and, like one past the end, can never be satisfied."""

    specs: tuple[tuple[int | None, int | None], ...]

    @property
    def first(self) -> int | None:
        """The first byte asked for, or None when a range counts from the end
        (the blob's size is needed to know)."""
        starts = [first for first, _ in self.specs]
        if any(first is None for first in starts):
            return None
        return min(first for first in starts if first is not None)

    def resolve(self, size: int) -> list[ByteRange]:
        """The ranges to send, ascending, overlapping and adjacent ones merged.
        Raises RangeInvalid (416) when none can be satisfied, TooManyRanges (400)
        past MAX_RANGES."""
        found = []
        for first, last in self.specs:
            if first is None:
                assert last is not None
                if last > 0 and size > 0:
                    found.append((max(size - last, 0), size))
            elif first < size and (last is None or last >= first):
                found.append((first, size if last is None else min(last + 1, size)))
        if not found:
            raise _unsatisfiable(size)
        found.sort()
        merged = [found[0]]
        for start, end in found[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        if len(merged) > MAX_RANGES:
            raise TooManyRanges(
                f"{len(merged)} ranges asked for at once; at most {MAX_RANGES}: ask for "
                "fewer, or for one range",
                detail={"ranges": len(merged), "limit": MAX_RANGES},
            )
        return [ByteRange(start, end, size) for start, end in merged]


def parse_ranges(header: str | None) -> RangeRequest | None:
    """The ranges a Range header asks for; None for the whole blob: no header,
    or one the RFC lets a server ignore (another unit, a malformed range). An
    invalid range (`bytes=9-3`) is kept: it is unsatisfiable, so alone it gets
    416, as distribution-spec's conformance suite wants."""
    if header is None:
        return None
    unit, sep, rest = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs: list[tuple[int | None, int | None]] = []
    for item in rest.split(","):
        item = item.strip()
        if not item:
            continue  # the list syntax allows empty elements
        match = _SPEC.fullmatch(item)
        if match is None:
            return None
        first, last = match.group(1), match.group(2)
        if first:
            specs.append((int(first), int(last) if last else None))
        elif last:
            specs.append((None, int(last)))
        else:
            return None
    return RangeRequest(tuple(specs)) if specs else None


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
