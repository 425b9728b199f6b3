"""Access control on every request: what each route needs, asked of the gate.

Each route under /v2/ needs an action on its repository (access/gate.py says
who decides): reads of manifests, tags, referrers and blobs need `pull`;
uploads and manifest puts need `push`, and a cross-repository mount `pull` on
the repository it mounts from as well; deletes need `delete`. The /v2/ ping,
the catalog (filtered by its handler, `visible`) and /-/ (warm-up checks each
image it is asked for, `require_pull`) only need a client the gate lets in.
/metrics, /healthz and /readyz stay open: they hold no image data and no secret.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..access.gate import Gate, Need
from ..access.identity import Identity
from ..access.policy import Action
from ..errors import DigestInvalid, TagInvalid
from ..oci.digest import Digest
from ..oci.reference import parse_name, parse_reference
from ..origin.authorize import Probe
from .state import GATE, IDENTITY, ORIGINS

__all__ = ["access_middleware", "require_pull", "visible"]

_PROTECTED = ("/v2", "/-/")
_PULL = frozenset({"manifest", "tags", "referrers", "blob", "blob_head"})
_PUSH = frozenset({"manifest_put", "upload", "upload_session"})
_DELETE = frozenset({"manifest_delete", "blob_delete"})


def access_middleware(gate: Gate) -> Middleware:
    @web.middleware
    async def controlled(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(_PROTECTED):
            return await handler(request)
        identity = await gate.identify(request.headers.get("Authorization"))
        request[IDENTITY] = identity
        needs = _needs(request)
        if not needs:
            gate.admit(identity, ping=request.match_info.route.name == "base")
        for need in needs:
            await gate.check(identity, need, request.app[ORIGINS])
        return await handler(request)

    return controlled


def _needs(request: web.Request) -> list[Need]:
    route = request.match_info.route.name
    if "name" not in request.match_info or route is None:
        return []
    name = parse_name(request.match_info["name"])
    namespace = request.query.get("ns")
    if route in _PULL:
        return [Need("pull", name, _probe(request), namespace)]
    action: Action = "delete" if route in _DELETE else "push"
    needs = [Need(action, name, ("tags", ""), namespace)]
    source, mount = request.query.get("from"), request.query.get("mount")
    if route == "upload" and source and mount:
        probe: Probe = ("blobs", mount) if _digest(mount) else ("tags", "")
        needs.append(Need("pull", parse_name(source), probe, namespace))
    return needs


def _probe(request: web.Request) -> Probe:
    """What to ask an origin for, if it decides: what the client asked for,
    once it is known to be well formed (else the tag list; the handler then
    answers the malformed request)."""
    info = request.match_info
    try:
        if "reference" in info:
            return ("manifests", str(parse_reference(info["reference"])))
        if "digest" in info:
            digest = str(Digest.parse(info["digest"]))
            return ("manifests", digest) if info.route.name == "referrers" else ("blobs", digest)
    except (DigestInvalid, TagInvalid):
        pass
    return ("tags", "")


def _digest(text: str) -> bool:
    try:
        Digest.parse(text)
    except DigestInvalid:
        return False
    return True


async def require_pull(request: web.Request, name: str) -> None:
    """For handlers that name repositories in their body (warm-up)."""
    gate = request.app.get(GATE)
    if gate is not None:
        await gate.check(request[IDENTITY], Need("pull", name, ("tags", "")), request.app[ORIGINS])


def visible(request: web.Request, names: list[str]) -> list[str]:
    """The repositories of `names` that the catalog may show this request."""
    gate = request.app.get(GATE)
    if gate is None:
        return names
    identity: Identity = request[IDENTITY]
    return [n for n in names if gate.visible(identity, n, request.app[ORIGINS])]
