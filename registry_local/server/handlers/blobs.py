"""GET and HEAD /v2/<name>/blobs/<digest>."""

from __future__ import annotations

from aiohttp import web

from ...oci.byterange import parse_ranges
from ...oci.digest import Digest
from ...oci.reference import parse_name
from ..sending import answer_blob, blob_headers
from ..state import BLOBS, METRICS, PUSHER

__all__ = ["delete_blob", "get_blob", "head_blob"]


def _target(request: web.Request) -> tuple[str, Digest]:
    return parse_name(request.match_info["name"]), Digest.parse(request.match_info["digest"])


async def head_blob(request: web.Request) -> web.StreamResponse:
    name, digest = _target(request)
    size = await request.app[BLOBS].size(name, digest, request.query.get("ns"))
    response = web.StreamResponse(headers=blob_headers(digest))
    response.content_length = size
    return response


async def delete_blob(request: web.Request) -> web.Response:
    name, digest = _target(request)
    await request.app[PUSHER].delete_blob(name, digest)
    return web.Response(status=202)


async def get_blob(request: web.Request) -> web.StreamResponse:
    name, digest = _target(request)
    wanted = parse_ranges(request.headers.get("Range"))
    body = await request.app[BLOBS].open(name, digest, request.query.get("ns"), wanted)
    metrics = request.app[METRICS].requests

    def count(sent: int, by_sendfile: bool) -> None:
        metrics.blob_bytes_sent(body.source, sent, by_sendfile=by_sendfile)

    return await answer_blob(request, digest, body, count, metrics.range_request)
