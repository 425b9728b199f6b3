"""A bearer-token gate in front of a registry, as Docker Hub and most registries run.

Requests to /v2/ without a valid token get a 401 with a `Bearer` challenge
naming the token endpoint (/token on the same server), the service and the
scope. /token checks basic-auth credentials (GET), or an OAuth2 refresh token
(POST, `grant_type=refresh_token`, as docker sends an `identitytoken`), and
hands out a token for the scope asked; tokens are remembered, so a test can see
how many were fetched.
Everything else is relayed to the registry behind it.
"""

from __future__ import annotations

import base64
import secrets
from collections import Counter

import aiohttp
from aiohttp import web

from .s3proxy import serve_app

__all__ = ["TokenGate"]


class TokenGate:
    """A bearer-token gate in front of a registry; see the module docstring."""

    def __init__(
        self, upstream: str, username: str, password: str, refresh_token: str | None = None
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self._refresh_token = refresh_token
        self._expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self._tokens: dict[str, str] = {}  # token -> scope
        self.tokens_issued: Counter[str] = Counter()  # by scope
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> TokenGate:
        app = web.Application()
        app.router.add_get("/token", self._token)
        app.router.add_post("/token", self._oauth)
        app.router.add_route("*", "/v2/{path:.*}", self._relay)
        self._runner, self.url = await serve_app(app)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self._expected:
            return web.json_response({"details": "bad credentials"}, status=401)
        scope = request.query.get("scope", "")
        token = secrets.token_hex(16)
        self._tokens[token] = scope
        self.tokens_issued[scope] += 1
        return web.json_response({"token": token, "expires_in": 300})

    async def _oauth(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (
            self._refresh_token is None
            or form.get("grant_type") != "refresh_token"
            or form.get("refresh_token") != self._refresh_token
        ):
            return web.json_response({"details": "bad refresh token"}, status=401)
        scope = str(form.get("scope", ""))
        token = secrets.token_hex(16)
        self._tokens[token] = scope
        self.tokens_issued[scope] += 1
        return web.json_response({"access_token": token, "expires_in": 300})

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        name = path.split("/manifests/")[0].split("/blobs/")[0]
        scope = f"repository:{name}:pull"
        auth = request.headers.get("Authorization", "")
        if path and self._tokens.get(auth.removeprefix("Bearer ")) != scope:
            challenge = f'Bearer realm="{self.url}/token",service="test",scope="{scope}"'
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED"}]},
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "range")}
        async with self._session.request(
            request.method, f"{self.upstream}/v2/{path}", headers=headers
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for name_, value in upstream.headers.items():
                if name_.lower() not in ("transfer-encoding", "connection", "content-encoding"):
                    response.headers[name_] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(1 << 16):
                await response.write(chunk)
            await response.write_eof()
            return response
