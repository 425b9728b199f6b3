"""POST /-/warm: fetch images into the cache from inside the server.

Enabled with --warm-endpoint. The body is JSON:
    {"images": ["team/app:v2", "team/db@sha256:..."], "platforms": ["linux/amd64"]}
Images are warmed one after another through the server's own caches, so they
share fills with live pulls. The answer lists what each image took; the first
image that cannot be warmed ends the request with its error.
"""

from __future__ import annotations

import json

from aiohttp import web

from ...cache.warm import parse_platform
from ...errors import RegistryError
from ...oci.reference import parse_image_reference
from ..access import require_pull
from ..state import WARMER

__all__ = ["warm"]

_MAX_BODY = 64 * 1024


class _BadRequest(RegistryError):
    pass


async def warm(request: web.Request) -> web.Response:
    body = await request.content.read(_MAX_BODY + 1)
    if len(body) > _MAX_BODY:
        raise _BadRequest("request body too large", status=413)
    try:
        document = json.loads(body or b"{}")
        images = document["images"]
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise TypeError
        platforms = [parse_platform(p) for p in document.get("platforms", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _BadRequest(
            'expected {"images": ["name:tag", ...], "platforms": ["os/arch", ...]}',
            status=400,
            detail=str(exc)[:200] or None,
        ) from None
    results = []
    for image in images:
        name, reference = parse_image_reference(image)
        await require_pull(request, name)
        try:
            result = await request.app[WARMER].warm(name, reference, platforms)
        except RegistryError as exc:
            # Say which of the images failed, in the same envelope.
            exc.message = f"{image}: {exc.message}"
            exc.detail = {"image": image, **(exc.detail if isinstance(exc.detail, dict) else {})}
            raise
        results.append(result.as_dict())
    return web.json_response({"results": results})
