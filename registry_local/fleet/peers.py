"""Reading from another host of the fleet: its fill in progress, and what it has staged.

The host that holds a blob's lease serves its fill in progress on its peer
listener (server/peer.py), by digest, to at most --peer-max-streams followers
at once, and says which parts of the blob it has staged in the bucket
(staging.py) through a long poll: one request that the holder answers as soon
as another part has landed. A follower reads a fill here as an ObjectStream, so
its own fill treats it like any other source: it resumes from the byte reached
and verifies the digest itself before it commits.

Off loopback the listener speaks TLS (--peer-tls-cert, --peer-tls-key) and its
peers check it against --peer-ca; the fleet's token is never sent in clear to
a peer that is not on loopback, unless --peer-insecure says it may be.

A holder with no stream to spare answers 503: PeerBusy, and the follower reads
the staged parts instead. Anything else short of a good answer (a refused
connection or TLS handshake, a 404 because the holder has no such fill, a 401
for a wrong token, a broken body, a URL the token may not be sent to) raises
BackendUnavailable: the follower then falls back to the bucket (blobs.py).
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import yarl

from ..config import FleetSettings
from ..config.values import is_loopback
from ..errors import BackendUnavailable, ConfigError
from ..oci.digest import Digest
from ..telemetry.metrics import FleetRecorder

__all__ = [
    "PEER_BLOB_PATH",
    "PEER_STAGED_PATH",
    "PeerBusy",
    "PeerClient",
    "Progress",
    "open_peer_client",
]

# The routes of the peer listener.
PEER_BLOB_PATH = "/peer/v1/blobs/{digest}"
PEER_STAGED_PATH = "/peer/v1/staged/{digest}"
POLL_SECONDS = 20.0  # a holder answers a progress poll at the latest after this
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class PeerBusy(BackendUnavailable):
    """The holder streams to as many followers as it may: read its staged parts."""


@dataclass(frozen=True)
class Progress:
    """What a holder has of a blob in the bucket: the blob's size once known, the
    staged parts [start, end) by offset, and whether the final object is there."""

    size: int | None
    spans: list[tuple[int, int]]
    done: bool


class PeerClient:
    """Reads from other hosts of the fleet: a blob from a peer's fill, and the progress
    of what it has staged; see the module docstring."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: str | None,
        metrics: FleetRecorder,
        insecure: bool = False,
        tls_name: str | None = None,
    ) -> None:
        self._session = session
        self._token = token
        self._insecure = insecure
        self._tls_name = tls_name
        self._metrics = metrics

    def _headers(self, url: str) -> dict[str, str]:
        """The token, unless it would cross the network in clear."""
        if self._token is None:
            return {}
        where = yarl.URL(url)
        if where.scheme != "https" and not is_loopback(where.host or "") and not self._insecure:
            raise BackendUnavailable(
                "peer", url, "refusing to send the fleet token in clear off loopback"
            )
        return {"Authorization": f"Bearer {self._token}"}

    async def open_blob(
        self, peer: str, digest: Digest, offset: int = 0, end: int | None = None
    ) -> _PeerStream:
        """Bytes [offset, end) of the blob from `peer`'s fill. Raises PeerBusy,
        BackendUnavailable."""
        url = peer + PEER_BLOB_PATH.format(digest=digest)
        headers = self._headers(url)
        if offset or end is not None:
            headers["Range"] = f"bytes={offset}-{'' if end is None else end - 1}"
        response = await self._get(url, headers)
        try:
            if response.status == 503:
                raise PeerBusy("peer", url, "no stream to spare")
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

    async def progress(self, peer: str, digest: Digest, have: int, wait: bool = True) -> Progress:
        """What `peer` has staged of the blob, once it has more than `have`
        parts (or at once, without `wait`). Raises BackendUnavailable."""
        url = peer + PEER_STAGED_PATH.format(digest=digest)
        query = f"?have={have}" + ("" if wait else "&wait=0")
        response = await self._get(url + query, self._headers(url))
        try:
            if response.status != 200:
                raise BackendUnavailable("peer", url, f"answered {response.status}")
            document = await response.json(content_type=None)
            spans = [(int(a), int(b)) for a, b in document["spans"]]
            size = document["size"]
            return Progress(None if size is None else int(size), spans, bool(document["done"]))
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable("peer", url, f"answered no usable progress: {exc}") from None
        finally:
            response.release()

    async def _get(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        name = self._tls_name if url.startswith("https://") else None
        try:
            return await self._session.get(url, headers=headers, server_hostname=name)
        except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
            raise BackendUnavailable("peer", url, f"unreachable: {exc}") from None


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
        metrics: FleetRecorder,
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
    settings: FleetSettings, metrics: FleetRecorder
) -> AsyncIterator[PeerClient]:
    """The client for other hosts' peer listeners: https peers are checked
    against --peer-ca (the system's roots without it). Raises ConfigError for
    an unusable CA file."""
    try:
        tls = ssl.create_default_context(cafile=str(settings.ca) if settings.ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use --peer-ca {settings.ca}: {exc}") from None
    timeout = aiohttp.ClientTimeout(
        total=None, connect=5, sock_read=max(settings.read_timeout, POLL_SECONDS + 5)
    )
    connector = aiohttp.TCPConnector(ssl=tls)
    async with aiohttp.ClientSession(
        timeout=timeout, auto_decompress=False, connector=connector
    ) as session:
        yield PeerClient(session, settings.token, metrics, settings.insecure, settings.tls_name)
