"""Access control on every request: what each route needs, asked of the gate.

Each route under /v2/ needs an action on its repository (access/gate.py says
who decides): reads of manifests, tags, referrers and blobs need `pull`;
uploads and manifest puts need `push`, and a cross-repository mount `pull` on
the repository it mounts from as well; deletes need `delete`. The /v2/ ping,
the catalog (filtered by its handler, `visible`) and /-/ (warm-up checks each
image it is asked for, `require_pull`) only need a client the gate lets in.
/metrics, /healthz and /readyz stay open: they hold no image data and no secret.
A 401 challenges the client to fetch a token at /-/token (access/tokens.py).
"""

from __future__ import annotations

import base64
import datetime
import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..access.gate import Gate, Need
from ..access.identity import Identity
from ..access.policy import Action
from ..errors import (
    DigestInvalid,
    ErrorCode,
    NameInvalid,
    RegistryError,
    TagInvalid,
    Unauthorized,
)
from ..oci.digest import Digest
from ..oci.reference import parse_name, parse_reference
from ..origin.authorize import Probe
from .state import GATE, IDENTITY, ORIGINS

__all__ = [
    "TOKEN_PATH",
    "access_middleware",
    "confined",
    "issue_token",
    "require_pull",
    "visible",
]

_PROTECTED = ("/v2", "/-/")
TOKEN_PATH = "/-/token"
_MAX_FORM = 64 * 1024
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")
_PULL = frozenset({"manifest", "tags", "referrers", "blob", "blob_head"})
_PUSH = frozenset({"manifest_put", "upload", "upload_session"})
_DELETE = frozenset({"manifest_delete", "blob_delete"})


def access_middleware(gate: Gate) -> Middleware:
    @web.middleware
    async def controlled(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(_PROTECTED) or (
            request.path == TOKEN_PATH and gate.confines
        ):
            return await handler(request)
        authorization = request.headers.get("Authorization")
        try:
            identity = await gate.identify(authorization)
            request[IDENTITY] = identity
            try:
                needs = _needs(request)
            except NameInvalid:
                gate.admit(identity, presented=authorization is not None)  # 401 first
                raise
            if not needs:
                ping = request.match_info.route.name == "base"
                gate.admit(identity, ping=ping, presented=authorization is not None)
            for need in needs:
                await gate.check(identity, need, request.app[ORIGINS])
        except Unauthorized as exc:
            exc.headers = gate.challenge(_realm(request))
            raise
        return await handler(request)

    return controlled


async def issue_token(request: web.Request) -> web.Response:
    """GET /-/token: a token standing for the credentials the client sent (or
    none), as a Docker token server answers (access/tokens.py). POST: the
    OAuth2 form containerd tries first (`grant_type=password`)."""
    gate = request.app[GATE]
    try:
        if request.method == "POST":
            authorization = await _password_grant(request)
        else:
            authorization = request.headers.get("Authorization")
        token, lifetime = gate.issue(await gate.identify(authorization))
    except Unauthorized as exc:
        exc.headers = gate.challenge()  # the realm itself asks for the credentials
        raise
    issued = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return web.json_response(
        {"token": token, "access_token": token, "expires_in": lifetime, "issued_at": issued},
        headers={"Cache-Control": "no-store"},
    )


async def _password_grant(request: web.Request) -> str | None:
    """The Basic header an OAuth2 password grant's form stands for (None: no
    credentials). Refresh tokens are not handed out here, so none is taken."""
    if (request.content_length or 0) > _MAX_FORM:
        raise _BadToken("token request too large", status=413)
    form = await request.post()
    if form.get("grant_type") != "password":
        raise _BadToken("only grant_type=password is accepted here; or GET with Basic", status=400)
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise _BadToken("a password grant needs username and password", status=400)
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class _BadToken(RegistryError):
    """A token request that cannot be answered (400, code UNSUPPORTED)."""

    code = ErrorCode.UNSUPPORTED


def _realm(request: web.Request) -> str | None:
    """The token endpoint's URL, as this client reaches the cache; None when its
    Host header is not a plain host and port (never echoed into a header)."""
    host = request.headers.get("Host", "")
    if not _HOST.fullmatch(host):
        return None
    # Behind a TLS terminator on loopback: the scheme the client used. A client
    # that lies about it only misdirects its own token request.
    forwarded = request.headers.get("X-Forwarded-Proto", "").lower()
    scheme = forwarded if forwarded in ("http", "https") else request.scheme
    return f"{scheme}://{host}{TOKEN_PATH}"


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


def confined(request: web.Request) -> bool:
    """Clients may read only some repositories (a policy, or origins deciding)."""
    gate = request.app.get(GATE)
    return gate is not None and gate.confines


def visible(request: web.Request, names: list[str]) -> list[str]:
    """The repositories of `names` that the catalog may show this request."""
    gate = request.app.get(GATE)
    if gate is None:
        return names
    identity: Identity = request[IDENTITY]
    return [n for n in names if gate.visible(identity, n, request.app[ORIGINS])]
