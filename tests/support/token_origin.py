"""An origin registry that decides who may pull what: the CNCF registry with token auth.

`TokenServer` is a token server as the Docker token spec draws it: `GET /token`
with basic-auth credentials (or none) and the scopes asked for answers a JWT
signed with RS256, whose `access` claim holds the actions the user is granted of
those asked; actions not granted are left out, as Docker Hub does, and the
registry then refuses the request the token was fetched for. Its key and its
self-signed certificate are made at start; the registry trusts the certificate
through its `rootcertbundle`.

Who may do what (patterns are fnmatch's, over repository names):

    alice / alice-pw   pull team-a/*
    bob / bob-pw       pull team-b/*
    carol / carol-pw   nothing
    cache / cache-pw   pull and push everything (the host's own origin credentials)
    anyone, anonymous  pull public/*

`token_origin` runs the registry on a directory holding team-a/app:v1,
team-b/app:v1 and public/app:v1 (each with layers of its own), behind that server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import fnmatch
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from registry_local.config import StoreSettings
from registry_local.transfer.imagebuild import Image, build_image

from .harness import seed_all
from .processes import TokenAuth, run_docker_registry
from .s3proxy import serve_app

__all__ = ["IMAGES", "PASSWORDS", "TokenOrigin", "TokenServer", "basic", "token_origin"]

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "cache": "cache-pw"}
IMAGES = ("team-a/app", "team-b/app", "public/app")  # each tagged v1

_EVERYONE = (("public/*", frozenset({"pull"})),)
_GRANTS: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "alice": (("team-a/*", frozenset({"pull"})),),
    "bob": (("team-b/*", frozenset({"pull"})),),
    "carol": (),
    "cache": (("*", frozenset({"pull", "push"})),),
}
_LIFETIME = 300  # seconds a token is good for


def basic(user: str, password: str) -> str:
    """The Authorization header value of basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A token server for one registry; see the module docstring.

    `token_requests` counts the requests for a token by user name ("" for
    anonymous, refused ones too), so a test can see how often the origin was asked.
    `fail(503)` makes every request answer that status until `fail(None)`.
    """

    def __init__(
        self, workdir: Path, service: str = "test-origin", issuer: str = "test-token-issuer"
    ) -> None:
        self.rootcertbundle = workdir / "token-issuer.pem"
        self.service = service
        self.issuer = issuer
        self.token_requests: Counter[str] = Counter()
        # By user and the program that asked (its User-Agent's product name).
        self.token_requests_by_agent: Counter[tuple[str, str]] = Counter()
        self.url = ""
        self._failing: int | None = None
        self._key: rsa.RSAPrivateKey | None = None
        self._cert_der = b""
        self._runner: web.AppRunner | None = None

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def auth(self) -> TokenAuth:
        """What the registry must be told to trust this server's tokens."""
        return TokenAuth(self.realm, self.service, self.issuer, self.rootcertbundle)

    def fail(self, status: int | None) -> None:
        """Answer every request with `status` from now on (None: serve again)."""
        self._failing = status

    async def start(self) -> TokenServer:
        self._key, certificate = await asyncio.to_thread(_key_and_certificate, self.issuer)
        self._cert_der = certificate.public_bytes(serialization.Encoding.DER)
        self.rootcertbundle.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        app = web.Application()
        app.router.add_get("/token", self._token)
        self._runner, self.url = await serve_app(app)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        if self._failing is not None:
            return web.json_response({"details": "failing on purpose"}, status=self._failing)
        user, right = _user(request.headers.get("Authorization"))
        self.token_requests[user] += 1
        agent = request.headers.get("User-Agent", "").partition("/")[0]
        self.token_requests_by_agent[(user, agent)] += 1
        if not right:
            return web.json_response({"details": "incorrect username or password"}, status=401)
        access = [
            granted
            for scope in request.query.getall("scope", [])
            for one in scope.split()
            if (granted := _granted(user, one)) is not None
        ]
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,  # one string: distribution 2.8 reads no list here
            "exp": now + _LIFETIME,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        token = self._sign(claims)
        issued = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat()
        return web.json_response(
            {"token": token, "access_token": token, "expires_in": _LIFETIME, "issued_at": issued}
        )

    def _sign(self, claims: dict[str, Any]) -> str:
        assert self._key is not None, "start() first"
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def _user(authorization: str | None) -> tuple[str, bool]:
    """The user the credentials name ("" for none), and whether they are right."""
    if authorization is None:
        return "", True
    scheme, _, encoded = authorization.partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "?", False
    return user, scheme.lower() == "basic" and PASSWORDS.get(user) == password


def _granted(user: str, scope: str) -> dict[str, Any] | None:
    """The access entry for one `repository:NAME:ACTIONS` scope, or None if the
    user is granted none of the actions (or the scope is of another kind)."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if kind != "repository" or not name:
        return None
    allowed: set[str] = set()
    for pattern, granted in (*_EVERYONE, *_GRANTS.get(user, ())):
        if fnmatch.fnmatchcase(name, pattern):
            allowed |= granted
    wanted = [action for action in actions.split(",") if action in allowed]
    return {"type": "repository", "name": name, "actions": wanted} if wanted else None


def _key_and_certificate(issuer: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An RSA key and a self-signed certificate for it, good for a day either way."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


@dataclass(frozen=True)
class TokenOrigin:
    """A running token-auth origin: its URL, its token server and what it holds."""

    url: str
    tokens: TokenServer
    images: dict[str, Image]  # by repository name, each tagged v1


@asynccontextmanager
async def token_origin(
    workdir: Path, images: Mapping[str, Image] | None = None
) -> AsyncIterator[TokenOrigin]:
    """The CNCF registry on a directory holding the IMAGES (or `images`, by
    repository name), each tagged v1, with token auth by a TokenServer; both
    stopped afterwards.

    The images are written into the directory as a push would leave them (the
    project's own layout, which the registry reads), so no registry runs without
    auth first."""
    root = workdir / "token-origin"
    held = (
        dict(images)
        if images is not None
        else {name: build_image([{f"{name}.bin": os.urandom(4096)}]) for name in IMAGES}
    )
    await seed_all(StoreSettings(s3=None, fs_root=root), [(n, "v1", i) for n, i in held.items()])
    tokens = await TokenServer(workdir).start()
    try:
        async with run_docker_registry(workdir, fs_root=root, token_auth=tokens.auth) as url:
            yield TokenOrigin(url, tokens, held)
    finally:
        await tokens.close()
