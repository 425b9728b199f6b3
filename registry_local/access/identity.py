"""Who a request comes from: an htpasswd user (bcrypt), a bearer token, or anonymous.

`--auth-htpasswd` and `--auth-token-file` name this host's own subjects. A token
file line is a token, whole; one of the form `NAME:SECRET` is named NAME, which
an access policy can grant to (the client still sends the whole line, so a
token file written before names existed means what it meant). A bcrypt check
is slow on purpose, so a verified user:password pair is remembered (as a hash)
for a few minutes. Credentials this host does not
know are not yet refused here: with `--authorize-at-origin` they may be the
client's credentials for an origin (access/gate.py decides). Credentials never
reach a log line, a metric, an error body or a repr.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from ..config.files import read_text
from ..errors import ConfigError

__all__ = ["Authenticator", "Identity"]

_REMEMBER = 300.0  # seconds a verified password is trusted without bcrypt
# $2a$, $2b$ or $2y$, a two-digit cost, and 53 characters of salt and hash.
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_NAMED_TOKEN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._@-]{0,63}):(.+)")
UNNAMED = ""  # the subject of a token without a name: only a policy's `*` names it


@dataclass(frozen=True)
class Identity:
    """A request's credentials and whom they prove: `subject` is a user or token
    name this host verified; None with an `authorization` is credentials it does
    not know (perhaps an origin's); None without one is anonymous. `rejected`:
    they name one of this host's users with a wrong password (never to be sent
    anywhere else)."""

    subject: str | None
    authorization: str | None = field(default=None, repr=False)
    rejected: bool = False

    @property
    def anonymous(self) -> bool:
        return self.authorization is None

    @property
    def local(self) -> bool:
        """The credentials are this host's own (never to be sent to an origin)."""
        return self.subject is not None


ANONYMOUS = Identity(None)


class Authenticator:
    """Checks a request's Authorization against htpasswd users or bearer tokens."""

    def __init__(self, users: dict[str, bytes], tokens: dict[bytes, str]) -> None:
        self._users = users
        self._tokens = tokens  # token -> its name
        self._verified: dict[bytes, float] = {}

    @classmethod
    def load(cls, htpasswd: Path | None, token_file: Path | None) -> Authenticator | None:
        """From the configured files, or None when authentication is off."""
        if htpasswd is None and token_file is None:
            return None
        users = _read_htpasswd(htpasswd) if htpasswd is not None else {}
        tokens = _read_tokens(token_file) if token_file is not None else {}
        return cls(users, tokens)

    def challenge(self) -> dict[str, str]:
        schemes = []
        if self._users:
            schemes.append('Basic realm="registry-local"')
        if self._tokens:
            schemes.append('Bearer realm="registry-local"')
        return {"WWW-Authenticate": ", ".join(schemes)}

    def subjects(self) -> frozenset[str]:
        """Every user and token name, for checking a policy's subjects."""
        return frozenset(self._users) | frozenset(n for n in self._tokens.values() if n)

    async def identify(self, authorization: str | None) -> Identity:
        if not authorization:
            return ANONYMOUS
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and self._tokens:
            name = self._token_name(value.strip().encode())
            # A near miss of one of our tokens is never anybody else's to be sent on.
            return Identity(name, authorization, rejected=name is None)
        if scheme.lower() == "basic" and self._users:
            return await self._user(value.strip(), authorization)
        return Identity(None, authorization)

    def _token_name(self, given: bytes) -> str | None:
        found = None
        for token, name in self._tokens.items():  # every one compared: constant time
            if hmac.compare_digest(given, token):
                found = name
        return found

    async def _user(self, encoded: str, authorization: str) -> Identity:
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return Identity(None, authorization, rejected=True)
        stored = self._users.get(user)
        if stored is None:
            return Identity(None, authorization)  # not ours: perhaps an origin's
        key = hashlib.sha256(f"{user}\0{password}".encode() + stored).digest()
        if self._verified.get(key, 0.0) > time.monotonic():
            return Identity(user, authorization)
        if not sep or not await asyncio.to_thread(bcrypt.checkpw, password.encode(), stored):
            return Identity(None, authorization, rejected=True)
        self._verified[key] = time.monotonic() + _REMEMBER
        return Identity(user, authorization)


def _read_htpasswd(path: Path) -> dict[str, bytes]:
    lines = read_text(path, "--auth-htpasswd").splitlines()
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


def _read_tokens(path: Path) -> dict[bytes, str]:
    lines = read_text(path, "--auth-token-file").splitlines()
    tokens: dict[bytes, str] = {}
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        named = _NAMED_TOKEN.fullmatch(text)  # the whole line stays the secret
        name, token = (named[1], text) if named else (UNNAMED, text)
        if len(token) < 16:
            raise ConfigError(
                f"--auth-token-file {path}: one token of 16 characters or more a line "
                "(NAME:TOKEN to name it)"
            )
        tokens[token.encode()] = name
    if not tokens:
        raise ConfigError(f"--auth-token-file {path}: one token of 16 characters or more a line")
    return tokens
