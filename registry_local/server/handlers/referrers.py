"""GET /v2/<name>/referrers/<digest>: the OCI 1.1 referrers API."""

from __future__ import annotations

import json

from aiohttp import web

from ...oci.digest import Digest
from ...oci.mediatypes import OCI_INDEX
from ...oci.reference import parse_name
from ..state import REFERRERS
from .paging import DEFAULT_PAGE, page

__all__ = ["get_referrers"]


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
    chosen, links = page(request, descriptors, DEFAULT_PAGE, lambda d: str(d["digest"]))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": chosen}
    headers.update(links)
    return web.Response(body=json.dumps(index).encode(), headers=headers)
