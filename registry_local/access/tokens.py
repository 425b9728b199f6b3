"""Bearer tokens this host hands out at `/-/token`, each standing for the
credentials (or the anonymity) it was asked with.

With access control on, the cache challenges clients the way Docker Hub does:
`Bearer realm=".../-/token"`. An engine then asks the realm for a token, with
the credentials it holds for the cache (or, as a registry mirror, for the
registry it mirrors), or with none: and an engine without credentials still
gets a token, an anonymous one, and pulls what anonymous clients may. With a
Basic challenge instead, dockerd skips a mirror altogether unless it holds
Docker Hub credentials (tests/test_engine_credentials.py).

A token is 32 random bytes. It is kept only as a hash, in memory, with the
identity it stands for, and lives for five minutes, as Docker Hub's do; at most
`capacity` are live (the oldest go first).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..lru import BoundedDict
from .identity import Identity

__all__ = ["TOKEN_PREFIX", "IssuedTokens"]

TOKEN_PREFIX = "rl1."  # tells our tokens from an htpasswd user's or a static token
LIFETIME = 300  # seconds


@dataclass(frozen=True)
class _Issued:
    identity: Identity
    expires: float


class IssuedTokens:
    """Tokens handed out, by the hash of each; see the module docstring."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._issued: BoundedDict[bytes, _Issued] = BoundedDict(capacity)
        self._clock = clock

    def issue(self, identity: Identity) -> tuple[str, int]:
        """A new token for `identity`, and its lifetime in seconds."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._issued.put(_hash(token), _Issued(identity, self._clock() + LIFETIME))
        return token, LIFETIME

    def identity(self, token: str) -> Identity | None:
        """Whom a token stands for; None for a token not ours, or expired."""
        issued = self._issued.get(_hash(token))
        if issued is None or issued.expires <= self._clock():
            return None
        return issued.identity


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
