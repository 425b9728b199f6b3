"""Staged parts: a blob the fleet reads from an origin, in the bucket part by part.

S3 is built for thousands of readers of one object; one host's network card is
not. So the host that holds a blob's lease does not only serve its fill to the
others: it puts the blob into the bucket part by part while it fills, under
registry-local's own prefix (layout.py: `staging/blobs/<alg>/<hex>/<start>-<end>`),
and the other hosts read the parts from the bucket as they land. Once the
holder has verified the whole blob, the final object of distribution's tree is
composed from the parts server-side (a multipart upload of UploadPartCopy
parts: no byte crosses the link again) and the parts are removed. A host that
takes a lease over (its holder died) lists the parts already staged and reads
only the rest from the origin.

A staged part is read from the fill's file as it is sent, never held in memory
whole, and written whole (one PutObject, or a multipart upload for a part past
S3's multipart threshold) or not at all, so one that is listed is complete; its
bytes are not verified until the whole blob is, by every host that reads them,
as all content is. Part sizes: STAGE_PART, or more
for a blob so large that its parts would pass S3's 10,000 parts of an upload.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..backing.backend import Backend
from ..config.values import S3_MIN_PART
from ..errors import BackendError
from ..layout import BucketLayout
from ..oci.digest import Digest

__all__ = ["Staging", "parts_of"]

log = logging.getLogger(__name__)

_MAX_PARTS = 9_000  # of S3's 10,000


def parts_of(size: int, part_size: int) -> list[tuple[int, int]]:
    """The [start, end) spans a blob of `size` bytes is staged in."""
    step = max(part_size, S3_MIN_PART, -(-size // _MAX_PARTS))
    return [(start, min(start + step, size)) for start in range(0, size, step)]


class Staging:
    """Staged parts of blobs in one bucket."""

    def __init__(self, backend: Backend, layout: BucketLayout, part_size: int) -> None:
        self.backend = backend
        self.layout = layout
        self.part_size = part_size  # --fleet-part-size

    def stages(self, size: int) -> bool:
        """Whether a blob of `size` bytes is staged at all: one part or less is
        simply written whole once it is verified."""
        return len(parts_of(size, self.part_size)) > 1

    def spans(self, size: int) -> list[tuple[int, int]]:
        return parts_of(size, self.part_size)

    async def put(self, digest: Digest, start: int, end: int, path: Path) -> None:
        """Stage bytes [start, end) of the blob, from the file `path` that holds
        them at the same offsets. Raises BackendError (the backend has retried
        what a retry may fix)."""
        await self.backend.write_file(self.layout.staged_part(digest, start, end), path, start, end)

    async def staged(self, digest: Digest) -> list[tuple[int, int]]:
        """The parts of `digest` in the bucket now, by offset. Raises BackendError."""
        names = await self.backend.walk(self.layout.staged_parts(digest))
        spans = [self.layout.staged_span(name) for name in names]
        return sorted(span for span in spans if span is not None)

    def part_read(
        self, digest: Digest, span: tuple[int, int], offset: int, end: int | None
    ) -> tuple[str, int, int]:
        """Where bytes [offset, end) of the blob lie in its staged part `span`: the
        part's key, and the first and past-last byte within the part."""
        start, stop = span
        last = stop if end is None else min(end, stop)
        return self.layout.staged_part(digest, start, stop), offset - start, last - start

    async def compose(self, digest: Digest, spans: Sequence[tuple[int, int]]) -> None:
        """The blob's object in distribution's tree, from its staged parts,
        server-side. Raises BackendError."""
        keys = [self.layout.staged_part(digest, start, end) for start, end in spans]
        await self.backend.compose(self.layout.blob_data(digest), keys)

    async def clear(self, digest: Digest) -> None:
        """Remove the blob's staged parts (composed, or not worth keeping)."""
        try:
            await self.backend.delete_tree(self.layout.staged_parts(digest))
        except BackendError as exc:
            log.warning(
                "could not remove the staged parts of %s: %s",
                digest,
                exc,
                extra={"digest": str(digest)},
            )
