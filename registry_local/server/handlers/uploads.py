"""Blob uploads: POST, PATCH, PUT, GET and DELETE on /v2/<name>/blobs/uploads/."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ...cache.push import UploadSession
from ...errors import DigestInvalid
from ...oci.byterange import parse_content_range, upload_range
from ...oci.digest import ALGORITHMS, Digest
from ...oci.reference import parse_name
from ..access import confined
from ..state import PUSHER

__all__ = ["cancel_upload", "finish_upload", "patch_upload", "start_upload", "upload_status"]

_CHUNK = 1 << 20


def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    return request.content.iter_chunked(_CHUNK)


def _url(request: web.Request, path: str) -> str:
    return str(request.url.with_path(path).with_query(None))


def _created(request: web.Request, name: str, digest: Digest) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Location": _url(request, f"/v2/{name}/blobs/{digest}"),
            "Docker-Content-Digest": str(digest),
        },
    )


def _in_progress(request: web.Request, session: UploadSession, status: int) -> web.Response:
    return web.Response(
        status=status,
        headers={
            "Location": _url(request, f"/v2/{session.name}/blobs/uploads/{session.id}"),
            "Range": upload_range(session.size),
            "Docker-Upload-UUID": session.id,
        },
    )


def _digest_param(request: web.Request) -> Digest:
    value = request.query.get("digest")
    if not value:
        raise DigestInvalid("the digest query parameter is required")
    return Digest.parse(value)


def _algorithm_param(request: web.Request) -> str:
    """The `digest-algorithm` a session hashes with (the spec's end-4c): sha256
    unless the client names another we know."""
    algorithm = request.query.get("digest-algorithm", "sha256")
    if algorithm not in ALGORITHMS:
        raise DigestInvalid(
            "unsupported digest algorithm",
            detail={"digest-algorithm": algorithm[:100], "supported": sorted(ALGORITHMS)},
        )
    return algorithm


async def start_upload(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    pusher = request.app[PUSHER]
    algorithm = _algorithm_param(request)
    mount, source = request.query.get("mount"), request.query.get("from")
    if mount:
        digest = Digest.parse(mount)
        # Mounting from "anywhere" reads any blob the store holds: not where
        # clients are confined to repositories (an ordinary session instead).
        anywhere = source is None or source == ""
        if not (anywhere and confined(request)) and await pusher.mount(
            name, digest, parse_name(source) if source else None
        ):
            return _created(request, name, digest)
        # Not linked there: the client gets an ordinary session, as the spec says,
        # hashing as the blob it named is hashed unless it asked otherwise.
        algorithm = request.query.get("digest-algorithm", digest.algorithm)
    elif "digest" in request.query:
        digest = _digest_param(request)
        await pusher.upload_whole(name, digest, _chunks(request))
        return _created(request, name, digest)
    return _in_progress(request, await pusher.start(name, algorithm), 202)


async def patch_upload(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    content_range = parse_content_range(request.headers.get("Content-Range"))
    session = await request.app[PUSHER].append(
        name, request.match_info["upload"], _chunks(request), content_range
    )
    return _in_progress(request, session, 202)


async def finish_upload(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    digest = _digest_param(request)
    content_range = parse_content_range(request.headers.get("Content-Range"))
    await request.app[PUSHER].finish(
        name, request.match_info["upload"], digest, _chunks(request), content_range
    )
    return _created(request, name, digest)


async def upload_status(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    session = await request.app[PUSHER].session(name, request.match_info["upload"])
    return _in_progress(request, session, 204)


async def cancel_upload(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    await request.app[PUSHER].cancel(name, request.match_info["upload"])
    return web.Response(status=204)
