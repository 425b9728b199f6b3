"""Blobs for readers: each request gets one BlobBody (fill/body.py), whatever is behind it.

BlobCache is the lookup the handlers call: where a blob comes from is decided
by sources.py (the link check, then the bucket or an origin), and the body is
found by the fill registry (fill/registry.py: memory, a committed file, a fill
joined or started, or the source itself when the cache has no room).
"""

from __future__ import annotations

from ..fill.body import BlobBody
from ..fill.fill import Fill
from ..fill.registry import Fills
from ..oci.byterange import RangeRequest
from ..oci.digest import Digest
from .sources import BlobSources
from .write_through import WriteThrough

__all__ = ["BlobCache"]


def _abandon(fill: Fill | None) -> None:
    if fill is not None:
        fill.abandon()


def _keep(_: int) -> None:
    pass


class BlobCache:
    """Blobs by repository and digest, for every reader of this host: one
    decision of where the bytes come from, then one body from the fills."""

    def __init__(self, sources: BlobSources, fills: Fills, through: WriteThrough) -> None:
        self._sources = sources
        self.fills = fills
        self._through = through

    async def open(
        self,
        name: str,
        digest: Digest,
        namespace: str | None = None,
        wanted: RangeRequest | None = None,
    ) -> BlobBody:
        """The blob, ready to read once its size is known. Raises BlobUnknown;
        `namespace` is the registry containerd names with ?ns=; `wanted`, the
        ranges the reader asks for (None: the whole blob): a fill started for
        it begins to read at the first of them."""
        lookup = await self._sources.for_blob(name, digest, namespace)
        return await lookup.confirmed(
            self.fills.body(lookup.source, wanted), lambda body: body.abandon()
        )

    async def size(self, name: str, digest: Digest, namespace: str | None = None) -> int:
        """The blob's size, without fetching it. Raises BlobUnknown."""
        lookup = await self._sources.for_blob(name, digest, namespace)
        return await lookup.confirmed(self.fills.size(lookup.source), _keep)

    async def prefetch(
        self, name: str, digest: Digest, size: int, namespace: str | None
    ) -> Fill | None:
        """Start filling a blob of `size` bytes (as the manifest says) that no
        client asked for yet; None when it is here or on its way already, or
        the cache has no room for it. Raises BlobUnknown when the repository
        does not link it (a fill started meanwhile is dropped unless a client
        joined it)."""
        lookup = await self._sources.for_blob(name, digest, namespace)
        return await lookup.confirmed(self.fills.prefetch(lookup.source, size), _abandon)

    def present(self, digest: Digest) -> bool:
        """Committed here or on its way (a quick look at memory, no I/O)."""
        return self.fills.present(digest)

    async def peer_body(self, digest: Digest) -> BlobBody | None:
        """What this host has of a blob for another host of the fleet (None:
        nothing); see Fills.peer_body."""
        return await self.fills.peer_body(digest)

    async def settled(self) -> None:
        """Wait until fills and what they fetched from origins are written
        through (tests)."""
        await self.fills.settled()
        await self._through.settled()

    async def close(self) -> None:
        """Stop every fill and write-through (shutdown)."""
        await self.fills.close()
        await self._through.close()
