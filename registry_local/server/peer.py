"""The peer listener: fills in progress and their staged parts, by digest, for the other hosts.

With --peer-listen, the host that holds a blob's lease (fleet/blob.py) serves
the hosts following it on a listener of its own, never the engines' port, by
digest only: it starts nothing and knows no repositories.

- `GET /peer/v1/blobs/<digest>`: the fill of a blob this host holds the lease
  of, with the same in-order, last-byte-held semantics engines get (the
  follower verifies the digest itself), to at most --peer-max-streams
  followers at once and over the fill's life, so that no host sends more than
  that many times a blob; one more gets 503 at once and reads the staged parts
  instead.
- `GET /peer/v1/staged/<digest>?have=N`: which parts of the blob this host has
  staged in the bucket, answered as soon as it has more than N of them (or the
  blob is whole in the bucket, or after POLL_SECONDS): a follower's long poll,
  one request at a time. `wait=0` answers at once.

With a fleet token, a request without it gets 401 and nothing else. With
--peer-tls-cert and --peer-tls-key the listener speaks TLS (server/run.py).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from ..errors import BlobUnknown, Unauthorized, Unavailable, Unsupported
from ..fleet.peers import PEER_BLOB_PATH, PEER_STAGED_PATH, POLL_SECONDS
from ..oci.digest import Digest
from . import middleware
from .sending import answer_blob
from .state import BLOBS, FLEET, MAIN_APP, METRICS

__all__ = ["build_peer_app"]

PEER_TOKEN = web.AppKey("peer_token", str)


class _Streams:
    """The blob streams this host serves its peers now, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


_STREAMS = web.AppKey("peer_streams", _Streams)


def _check_token(request: web.Request) -> None:
    token = request.app.get(PEER_TOKEN)
    if token is not None:
        offered = request.headers.get("Authorization", "")
        if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("peers of this fleet must present its token")


async def _peer_blob(request: web.Request) -> web.StreamResponse:
    _check_token(request)
    digest = Digest.parse(request.match_info["digest"])
    main = request.app[MAIN_APP]
    streams = request.app[_STREAMS]
    metrics = main[METRICS].fleet
    fleet = main.get(FLEET)
    stager = None if fleet is None else fleet.holding.get(digest)
    if stager is None:
        raise BlobUnknown("this host holds no lease of that blob", detail={"digest": str(digest)})
    if streams.open >= streams.limit or not stager.grant_stream(streams.limit):
        metrics.peer_refused()
        raise Unavailable(
            "this host streams that blob to as many peers as it may: read the staged parts",
            detail={"digest": str(digest), "streams": streams.limit},
        )
    streams.open += 1
    metrics.peer_stream(1)
    try:
        body = await main[BLOBS].peer_body(digest)
        if body is None:
            raise BlobUnknown("this host has no fill of that blob", detail={"digest": str(digest)})

        def count(sent: int, _by_sendfile: bool) -> None:
            metrics.peer_bytes("served", sent)

        return await answer_blob(request, digest, body, count)
    finally:
        streams.open -= 1
        metrics.peer_stream(-1)


async def _peer_staged(request: web.Request) -> web.Response:
    _check_token(request)
    digest = Digest.parse(request.match_info["digest"])
    try:
        have = int(request.query.get("have", "0"))
    except ValueError:
        raise Unsupported("have= must be a number of parts", status=400) from None
    patience = 0.0 if request.query.get("wait") == "0" else POLL_SECONDS
    fleet = request.app[MAIN_APP].get(FLEET)
    stager = None if fleet is None else fleet.holding.get(digest)
    if stager is None:
        raise BlobUnknown("this host stages no such blob", detail={"digest": str(digest)})
    progress = await stager.beyond(have, patience)
    return web.json_response(
        {"size": progress.size, "spans": progress.spans, "done": progress.done}
    )


def build_peer_app(main: web.Application, token: str | None, max_streams: int) -> web.Application:
    """The app of the --peer-listen listener, serving `main`'s blobs."""
    app = web.Application(middlewares=[middleware.errors])
    app[MAIN_APP] = main
    app[_STREAMS] = _Streams(max_streams)
    if token is not None:
        app[PEER_TOKEN] = token
    app.router.add_get(PEER_BLOB_PATH, _peer_blob, allow_head=False)
    app.router.add_get(PEER_STAGED_PATH, _peer_staged, allow_head=False)
    return app
