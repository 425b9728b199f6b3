"""The peer listener: fills in progress, served by digest to the other hosts.

With --peer-listen, the host that holds a blob's lease (fleet/coordination.py) serves
its fill to the hosts following it, on a listener of its own, never the
engines' port. One route, by digest only: it serves what this host has
committed or is filling, starts nothing, and knows no repositories. Bytes go
out with the same in-order, last-byte-held semantics engines get, and the
follower verifies the digest itself. With a fleet token, a request without it
gets 401 and nothing else.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from ..errors import BlobUnknown
from ..fleet.peers import PEER_BLOB_PATH
from ..oci.digest import Digest
from . import middleware
from .auth import Unauthorized
from .sending import answer_blob
from .state import BLOBS, MAIN_APP, METRICS

__all__ = ["build_peer_app"]

PEER_TOKEN = web.AppKey("peer_token", str)


async def _peer_blob(request: web.Request) -> web.StreamResponse:
    token = request.app.get(PEER_TOKEN)
    if token is not None:
        offered = request.headers.get("Authorization", "")
        if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("peers of this fleet must present its token")
    digest = Digest.parse(request.match_info["digest"])
    main = request.app[MAIN_APP]
    body = await main[BLOBS].peer_body(digest)
    if body is None:
        raise BlobUnknown("this host has no fill of that blob", detail={"digest": str(digest)})
    metrics = main[METRICS]

    def count(sent: int, _by_sendfile: bool) -> None:
        metrics.peer_bytes("served", sent)

    return await answer_blob(request, digest, body, count)


def build_peer_app(main: web.Application, token: str | None) -> web.Application:
    """The app of the --peer-listen listener, serving `main`'s blobs."""
    app = web.Application(middlewares=[middleware.errors])
    app[MAIN_APP] = main
    if token is not None:
        app[PEER_TOKEN] = token
    app.router.add_get(PEER_BLOB_PATH, _peer_blob, allow_head=False)
    return app
