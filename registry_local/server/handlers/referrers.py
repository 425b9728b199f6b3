"""GET /v2/<name>/referrers/<digest>: the OCI 1.1 referrers API."""

from __future__ import annotations

import json

from aiohttp import web

from ...oci.digest import Digest
from ...oci.mediatypes import OCI_INDEX
from ...oci.reference import parse_name
from ..state import REFERRERS
from .manifests import page_size

__all__ = ["PAGE", "get_referrers"]

PAGE = 1000  # descriptors per page when the client does not say (Link: next)


async def get_referrers(request: web.Request) -> web.Response:
    name = parse_name(request.match_info["name"])
    subject = Digest.parse(request.match_info["digest"])
    namespace = request.query.get("ns")
    descriptors = await request.app[REFERRERS].of(name, subject, namespace)
    headers = {"Content-Type": OCI_INDEX}
    wanted = request.query.get("artifactType")
    if wanted is not None:
        descriptors = [d for d in descriptors if d.get("artifactType") == wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    last = request.query.get("last", "")
    limit = page_size(request)
    limit = PAGE if limit is None else limit
    page = [d for d in descriptors if str(d["digest"]) > last]
    if len(page) > limit:
        page = page[:limit]
        if page:
            url = request.rel_url.update_query(n=str(limit), last=str(page[-1]["digest"]))
            headers["Link"] = f'<{url}>; rel="next"'
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": page}
    return web.Response(body=json.dumps(index).encode(), headers=headers)
