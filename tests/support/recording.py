"""A registry that records what clients send it, for probing real engines.

It answers the Registry v2 API on 127.0.0.1 the way a registry with Basic
access control would begin a conversation: `/v2/` without an Authorization
header gets a 401 with `WWW-Authenticate: Basic realm="x"`, with any header a
200 (it never checks the password). Every request is recorded as a `Seen`:
method, path, query and Authorization header, in arrival order.

Manifests and blobs come from the `Image` it is given (any repository name,
any tag names the image's top manifest) or are a 404 without one. `refuse`
makes every manifest request answer that status instead (401 carries the
Basic challenge), to watch what an engine does when its mirror says no.
`challenge_all` answers every request without an Authorization header with
the 401 challenge, as a registry that lets nobody in anonymously would (for
engines, containerd among them, that never ask `/v2/` first).

    registry = await RecordingRegistry(image).start()
    try:
        ... run an engine against registry.host ...
        assert registry.users() == {"alice"}
    finally:
        await registry.close()

Or `async with recording_registry(image) as registry:`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from registry_local.transfer.imagebuild import Image

from .s3proxy import serve_app

__all__ = ["CHALLENGE", "RecordingRegistry", "Seen", "recording_registry"]

CHALLENGE = 'Basic realm="x"'


@dataclass(frozen=True)
class Seen:
    """One request as the registry received it, and the status it answered."""

    method: str
    path: str
    query: str
    authorization: str | None
    status: int

    @property
    def scheme(self) -> str | None:
        """`Basic`, `Bearer`, ... or None when no Authorization was sent."""
        if self.authorization is None:
            return None
        return self.authorization.split(" ", 1)[0]

    @property
    def user(self) -> str | None:
        """The user name of a Basic Authorization header (never the password)."""
        if self.scheme != "Basic" or self.authorization is None:
            return None
        try:
            decoded = base64.b64decode(self.authorization.split(" ", 1)[1]).decode()
        except (IndexError, binascii.Error, UnicodeDecodeError):
            return None
        return decoded.split(":", 1)[0]

    @property
    def kind(self) -> str:
        """`base` (/v2/), `manifest`, `blob` or `other`: what the path asks for."""
        if self.path.rstrip("/") == "/v2":
            return "base"
        if "/manifests/" in self.path:
            return "manifest"
        if "/blobs/" in self.path:
            return "blob"
        return "other"


class RecordingRegistry:
    """See the module docstring."""

    def __init__(
        self, image: Image | None = None, *, refuse: int | None = None, challenge_all: bool = False
    ) -> None:
        self.image = image
        self.refuse = refuse
        self.challenge_all = challenge_all
        self.seen: list[Seen] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, as engines name a registry."""
        return self.url.removeprefix("http://")

    async def start(self) -> RecordingRegistry:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/v2/", self._base)
        app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", self._manifest)
        app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", self._blob)
        self._runner, self.url = await serve_app(app)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def users(self) -> set[str | None]:
        """The Basic user names seen (None for requests without Basic)."""
        return {seen.user for seen in self.seen}

    def of_kind(self, kind: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.kind == kind]

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if self.challenge_all and "Authorization" not in request.headers:
                response: web.StreamResponse = _error(401, "UNAUTHORIZED")
            else:
                response = await handler(request)
        except web.HTTPException as exc:
            status = exc.status
            raise
        else:
            status = response.status
            return response
        finally:
            self.seen.append(
                Seen(
                    request.method,
                    request.path,
                    request.query_string,
                    request.headers.get("Authorization"),
                    status,
                )
            )

    async def _base(self, request: web.Request) -> web.Response:
        if "Authorization" not in request.headers:
            return _error(401, "UNAUTHORIZED")
        return web.json_response({})

    async def _manifest(self, request: web.Request) -> web.Response:
        if self.refuse is not None:
            return _error(self.refuse, _CODES.get(self.refuse, "UNKNOWN"))
        reference = request.match_info["reference"]
        if self.image is None:
            return _error(404, "MANIFEST_UNKNOWN")
        manifests = {str(d): (d, body) for d, body in self.image.manifests.items()}
        wanted = reference if reference.startswith("sha256:") else str(self.image.top)
        if wanted not in manifests:
            return _error(404, "MANIFEST_UNKNOWN")
        digest, body = manifests[wanted]
        content_type = self.image.manifest_types[digest]
        return _answer(body, content_type, wanted)

    async def _blob(self, request: web.Request) -> web.Response:
        wanted = request.match_info["digest"]
        blobs = {} if self.image is None else {str(d): b for d, b in self.image.blobs.items()}
        if wanted not in blobs:
            return _error(404, "BLOB_UNKNOWN")
        return _answer(blobs[wanted], "application/octet-stream", wanted)


_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "MANIFEST_UNKNOWN"}


def _answer(body: bytes, content_type: str, digest: str) -> web.Response:
    """The body (aiohttp leaves it out of a HEAD answer, keeping its length)."""
    headers = {"Docker-Content-Digest": digest, "Content-Type": content_type}
    return web.Response(body=body, headers=headers)


def _error(status: int, code: str) -> web.Response:
    headers = {"WWW-Authenticate": CHALLENGE} if status == 401 else {}
    return web.json_response(
        {"errors": [{"code": code, "message": code.lower().replace("_", " ")}]},
        status=status,
        headers=headers,
    )


@asynccontextmanager
async def recording_registry(
    image: Image | None = None, *, refuse: int | None = None, challenge_all: bool = False
) -> AsyncIterator[RecordingRegistry]:
    """A started `RecordingRegistry`, closed afterwards."""
    registry = await RecordingRegistry(image, refuse=refuse, challenge_all=challenge_all).start()
    try:
        yield registry
    finally:
        await registry.close()
