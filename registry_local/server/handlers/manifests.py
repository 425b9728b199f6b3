"""GET and HEAD /v2/<name>/manifests/<reference>, and GET /v2/<name>/tags/list."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from ...cache.manifests import Manifest, ManifestCache
from ...errors import (
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    TagInvalid,
)
from ...oci.digest import Digest
from ...oci.mediatypes import (
    DOCKER_MANIFEST_LIST,
    MAX_MANIFEST_BYTES,
    acceptable,
    accepts_manifest_lists,
    parse_accept,
)
from ...oci.reference import parse_name, parse_reference, parse_tag
from ..access import visible
from ..state import CATALOG, MANIFESTS, PREFETCHER, PUSHER
from .paging import DEFAULT_PAGE, page

__all__ = [
    "MAX_TAGS_PER_PUSH",
    "catalog",
    "delete_manifest",
    "get_manifest",
    "list_tags",
    "put_manifest",
]

# Tags one push by digest may set with `?tag=` (the spec asks for at least 10;
# past this, 414 as it allows).
MAX_TAGS_PER_PUSH = 100


async def _select(
    manifests: ManifestCache,
    name: str,
    reference: Digest | str,
    accepted: frozenset[str],
    namespace: str | None,
) -> Manifest:
    """The manifest to answer with, negotiated as mediatypes.py describes."""
    if isinstance(reference, Digest):
        manifest = await manifests.by_digest(name, reference, namespace)
    else:
        manifest = await manifests.by_tag(name, reference, namespace)
        if manifest.media_type == DOCKER_MANIFEST_LIST and not accepts_manifest_lists(accepted):
            child = manifest.info.platform_child("linux", "amd64")
            if child is None:
                raise ManifestUnknown("manifest list has no linux/amd64 image for this client")
            manifest = await manifests.by_digest(name, child, namespace)
    if not acceptable(manifest.media_type, accepted):
        raise ManifestUnknown(
            f"{manifest.media_type} found, but the Accept header does not allow it",
            detail={"mediaType": manifest.media_type},
        )
    return manifest


async def get_manifest(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    try:
        reference = parse_reference(request.match_info["reference"])
    except (TagInvalid, DigestInvalid):
        # Neither a tag nor a digest: no such manifest can exist (as registry:2 says).
        raise ManifestUnknown(detail={"reference": request.match_info["reference"][:200]}) from None
    accepted = parse_accept(request.headers.getall("Accept", ()))
    namespace = request.query.get("ns")  # containerd: the registry this mirrors
    manifest = await _select(request.app[MANIFESTS], name, reference, accepted, namespace)
    if request.method == "GET" and PREFETCHER in request.app:
        request.app[PREFETCHER].image(name, manifest, namespace)
    etag = f'"{manifest.digest}"'
    headers = {
        "Content-Type": manifest.media_type,
        "Docker-Content-Digest": str(manifest.digest),
        "ETag": etag,
    }
    if request.headers.get("If-None-Match") in (etag, str(manifest.digest)):
        return web.Response(status=304, headers=headers)
    return web.Response(body=manifest.data, headers=headers)


async def _read_manifest_body(request: web.Request) -> bytes:
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > MAX_MANIFEST_BYTES:
            raise ManifestInvalid("manifest larger than 4 MiB", status=413)
    return bytes(body)


def _tag_params(request: web.Request) -> list[str]:
    """The `?tag=` parameters of a manifest push, each valid, without repeats."""
    tags = list(dict.fromkeys(request.query.getall("tag", ())))
    if len(tags) > MAX_TAGS_PER_PUSH:
        raise TagInvalid(
            f"{len(tags)} tags in one push; at most {MAX_TAGS_PER_PUSH}",
            detail={"tags": len(tags), "limit": MAX_TAGS_PER_PUSH},
            status=414,
        )
    return [parse_tag(tag) for tag in tags]


async def put_manifest(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    reference = parse_reference(request.match_info["reference"])
    tags = _tag_params(request)  # all checked before the body is read or anything stored
    data = await _read_manifest_body(request)
    manifest = await request.app[PUSHER].put_manifest(
        name, reference, request.headers.get("Content-Type", ""), data, tags
    )
    digest = manifest.digest
    headers = CIMultiDict(
        {
            "Location": str(
                request.url.with_path(f"/v2/{name}/manifests/{digest}").with_query(None)
            ),
            "Docker-Content-Digest": str(digest),
        }
    )
    if manifest.info.subject is not None:  # OCI 1.1: we keep its referrers
        headers["OCI-Subject"] = str(manifest.info.subject.digest)
    for tag in tags:  # one header per tag set (the spec allows a list in one, too)
        headers.add("OCI-Tag", tag)
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    reference = parse_reference(request.match_info["reference"])
    await request.app[PUSHER].delete_manifest(name, reference)
    return web.Response(status=202)


async def list_tags(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    every = await request.app[MANIFESTS].tags(name, request.query.get("ns"))
    tags, headers = page(request, every, None, str)
    return web.json_response({"name": name, "tags": tags}, headers=headers)


async def catalog(request: web.Request) -> web.Response:
    """GET /v2/_catalog: the backing store's repositories, a page at a time."""
    names = visible(request, await request.app[CATALOG].names())
    repositories, headers = page(request, names, DEFAULT_PAGE, str)
    return web.json_response({"repositories": repositories}, headers=headers)
