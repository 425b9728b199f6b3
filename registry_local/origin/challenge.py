"""What an origin asks of a client in its 401: `WWW-Authenticate`, parsed.

A `Bearer` challenge names the realm (the token server's URL) and the service a
token is asked for; its `scope` and `error` change with each request and are not
kept, so two challenges of one origin compare equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Challenge"]

_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Challenge:
    """The auth an origin wants: a token from `realm` for `service`, or basic."""

    scheme: Literal["bearer", "basic"]
    realm: str = ""
    service: str | None = None

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        """The challenge of a `WWW-Authenticate` value; None for a scheme we do not
        speak, or a bearer challenge without a realm."""
        scheme, _, params = header.strip().partition(" ")
        if scheme.lower() == "basic":
            return cls("basic")
        if scheme.lower() != "bearer":
            return None
        fields = dict(_PARAM.findall(params))
        if not fields.get("realm"):
            return None
        return cls("bearer", fields["realm"], fields.get("service"))
