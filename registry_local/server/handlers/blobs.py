"""GET and HEAD /v2/<name>/blobs/<digest>."""

from __future__ import annotations

from aiohttp import web

from ...oci.byterange import parse_range
from ...oci.digest import Digest
from ...oci.reference import parse_name
from ..sending import send_blob
from ..state import BLOBS, METRICS, PUSHER

__all__ = ["delete_blob", "get_blob", "head_blob"]


def _headers(digest: Digest) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }


def _target(request: web.Request) -> tuple[str, Digest]:
    return parse_name(request.match_info["name"]), Digest.parse(request.match_info["digest"])


async def head_blob(request: web.Request) -> web.StreamResponse:
    name, digest = _target(request)
    size = await request.app[BLOBS].size(name, digest, request.query.get("ns"))
    response = web.StreamResponse(headers=_headers(digest))
    response.content_length = size
    return response


async def delete_blob(request: web.Request) -> web.Response:
    name, digest = _target(request)
    await request.app[PUSHER].delete_blob(name, digest)
    return web.Response(status=202)


async def get_blob(request: web.Request) -> web.StreamResponse:
    name, digest = _target(request)
    body = await request.app[BLOBS].open(name, digest, request.query.get("ns"))
    try:
        byte_range = body.fit(parse_range(request.headers.get("Range"), body.size))
        headers = _headers(digest)
        if byte_range.partial:
            headers["Content-Range"] = byte_range.content_range()
        status = 206 if byte_range.partial else 200
        if body.whole is not None:
            # Whole in memory: one write for the headers and the body together.
            request.app[METRICS].blob_bytes_sent(body.source, byte_range.length, by_sendfile=False)
            return web.Response(
                status=status, body=body.whole[byte_range.start : byte_range.end], headers=headers
            )
        stream = web.StreamResponse(status=status, headers=headers)
        stream.content_length = byte_range.length
        await stream.prepare(request)
        if await send_blob(request, stream, body, byte_range, request.app[METRICS]):
            await stream.write_eof()
        return stream
    finally:
        body.close()
