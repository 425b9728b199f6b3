"""Authentication for the registry API: htpasswd users (bcrypt) or bearer tokens.

Off unless --auth-htpasswd or --auth-token-file is given; then every request
under /v2/ and /-/ needs credentials (a 401 with a challenge tells clients so),
while /metrics, /healthz and /readyz stay open. A bcrypt check is slow on
purpose, so a verified user:password pair is remembered (as a hash) for a few
minutes. Credentials never reach a log line, a metric or an error body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import time
from pathlib import Path

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import ConfigError, RegistryError
from ..errors import ErrorCode as _Codes

__all__ = ["Authenticator", "Unauthorized", "auth_middleware"]

_REMEMBER = 300.0  # seconds a verified password is trusted without bcrypt
_PROTECTED = ("/v2", "/-/")
# $2a$, $2b$ or $2y$, a two-digit cost, and 53 characters of salt and hash.
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


class Unauthorized(RegistryError):
    """The request lacks valid credentials (401 UNAUTHORIZED)."""

    code = _Codes.UNAUTHORIZED


class Authenticator:
    """Checks a request's Authorization against htpasswd users or bearer tokens."""

    def __init__(self, users: dict[str, bytes], tokens: list[bytes]) -> None:
        self._users = users
        self._tokens = tokens
        self._verified: dict[bytes, float] = {}

    @classmethod
    def load(cls, htpasswd: Path | None, token_file: Path | None) -> Authenticator | None:
        """From the configured files, or None when authentication is off."""
        if htpasswd is None and token_file is None:
            return None
        users = _read_htpasswd(htpasswd) if htpasswd is not None else {}
        tokens = _read_tokens(token_file) if token_file is not None else []
        return cls(users, tokens)

    def challenge(self) -> dict[str, str]:
        schemes = []
        if self._users:
            schemes.append('Basic realm="registry-local"')
        if self._tokens:
            schemes.append('Bearer realm="registry-local"')
        return {"WWW-Authenticate": ", ".join(schemes)}

    async def allows(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and self._tokens:
            given = value.strip().encode()
            return any(hmac.compare_digest(given, token) for token in self._tokens)
        if scheme.lower() == "basic" and self._users:
            return await self._password_ok(value.strip())
        return False

    async def _password_ok(self, encoded: str) -> bool:
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        stored = self._users.get(user)
        if not sep or stored is None:
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode() + stored).digest()
        if self._verified.get(key, 0.0) > time.monotonic():
            return True
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), stored)
        if ok:
            self._verified[key] = time.monotonic() + _REMEMBER
        return bool(ok)


def auth_middleware(authenticator: Authenticator) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(_PROTECTED) and not await authenticator.allows(
            request.headers.get("Authorization")
        ):
            raise Unauthorized(headers=authenticator.challenge())
        return await handler(request)

    return authenticate


def _read_htpasswd(path: Path) -> dict[str, bytes]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read --auth-htpasswd {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--auth-htpasswd {path} is not UTF-8 text") from None
    users = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, hashed = line.strip().partition(":")
        if not sep or not _BCRYPT.fullmatch(hashed):
            raise ConfigError(
                f"{path}:{number}: not a bcrypt entry: only bcrypt entries are accepted "
                "(htpasswd -B)"
            )
        users[user] = hashed.encode()
    if not users:
        raise ConfigError(f"--auth-htpasswd {path} has no users")
    return users


def _read_tokens(path: Path) -> list[bytes]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read --auth-token-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--auth-token-file {path} is not UTF-8 text") from None
    tokens = [t.strip().encode() for t in lines if t.strip() and not t.lstrip().startswith("#")]
    if not tokens or any(len(t) < 16 for t in tokens):
        raise ConfigError(f"--auth-token-file {path}: one token of 16 characters or more a line")
    return tokens
