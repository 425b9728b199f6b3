"""Requests naming a registry this cache does not serve are refused before the
cache is asked (origin/scope.py says which it serves and why)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import NameUnknown
from ..origin.scope import RegistryScope

__all__ = ["scope_middleware"]


def scope_middleware(scope: RegistryScope) -> Middleware:
    @web.middleware
    async def in_scope(request: web.Request, handler: Handler) -> web.StreamResponse:
        namespace = request.query.get("ns")
        if "name" in request.match_info and not scope.serves(namespace):
            raise NameUnknown(
                f"registry {namespace} is not served here: no upstream or "
                "--bucket-registries entry names it",
                detail={"registry": namespace},
            )
        return await handler(request)

    return in_scope
