"""Reading a blob from another host of the fleet, while that host's fill runs.

The host that holds a blob's lease serves its fill in progress on its peer
listener (server/peer.py), by digest, with the same in-order, last-byte-held
semantics engines get. A follower reads it here as an ObjectStream, so the
follower's own fill treats it like any other source: it resumes from the byte
reached and verifies the digest itself before it commits.

Anything short of a good answer (refused connection, a 404 because the holder
has no such fill, a 401 for a wrong token, a broken body) raises
BackendUnavailable: the follower then falls back to the bucket (coordination.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp

from ..errors import BackendUnavailable
from ..oci.digest import Digest
from ..telemetry.metrics import Metrics

__all__ = ["PEER_BLOB_PATH", "PeerClient", "open_peer_client"]

# The one route of the peer listener.
PEER_BLOB_PATH = "/peer/v1/blobs/{digest}"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class PeerClient:
    def __init__(self, session: aiohttp.ClientSession, token: str | None, metrics: Metrics):
        self._session = session
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._metrics = metrics

    async def open_blob(
        self, peer: str, digest: Digest, offset: int = 0, end: int | None = None
    ) -> _PeerStream:
        """Bytes [offset, end) of the blob from `peer`'s fill. Raises BackendUnavailable."""
        url = peer + PEER_BLOB_PATH.format(digest=digest)
        headers = dict(self._headers)
        if offset or end is not None:
            headers["Range"] = f"bytes={offset}-{'' if end is None else end - 1}"
        try:
            response = await self._session.get(url, headers=headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BackendUnavailable("peer", url, f"unreachable: {exc}") from None
        try:
            if response.status not in (200, 206):
                raise BackendUnavailable("peer", url, f"answered {response.status}")
            size, first = _extent(response)
            if first != offset:
                raise BackendUnavailable("peer", url, "answered another range")
        except (BackendUnavailable, ValueError) as exc:
            response.release()
            if isinstance(exc, ValueError):
                raise BackendUnavailable("peer", url, "answered no usable length") from None
            raise
        wanted = (size if end is None else min(end, size)) - offset
        return _PeerStream(response, url, size, wanted, self._metrics)


def _extent(response: aiohttp.ClientResponse) -> tuple[int, int]:
    """(whole size, first byte) of a 200 or 206 answer."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None:
            raise ValueError("no Content-Range")
        return int(match.group(3)), int(match.group(1))
    if response.content_length is None:
        raise ValueError("no Content-Length")
    return response.content_length, 0


class _PeerStream:
    """A blob body from a peer, in the ObjectStream protocol (backend.py)."""

    def __init__(
        self,
        response: aiohttp.ClientResponse | None,
        url: str,
        size: int,
        wanted: int,
        metrics: Metrics,
    ) -> None:
        self._response = response
        self._url = url
        self._left = wanted if response is not None else 0
        self._metrics = metrics
        self.size = size

    async def read(self, n: int) -> bytes:
        if self._left <= 0 or self._response is None:
            return b""
        try:
            chunk = await self._response.content.read(min(n, self._left))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable("peer", self._url, f"body broke: {exc}") from None
        if not chunk:
            raise BackendUnavailable("peer", self._url, "body ended early")
        self._left -= len(chunk)
        self._metrics.peer_bytes("received", len(chunk))
        return chunk

    async def close(self) -> None:
        if self._response is not None:
            self._response.release()
            self._response = None


@contextlib.asynccontextmanager
async def open_peer_client(
    token: str | None, read_timeout: float, metrics: Metrics
) -> AsyncIterator[PeerClient]:
    timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=read_timeout)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield PeerClient(session, token, metrics)
