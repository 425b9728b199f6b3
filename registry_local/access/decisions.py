"""The origin's decisions of who may pull what, remembered for a while.

Asking the origin for every request would put its latency (a token and a probe)
on every pull, so each answer is remembered per (credential, repository):

    GRANTED    allowed, remembered for `ttl` seconds; its time is kept for `grace`
    REFUSED    refused, remembered for `ttl` seconds; it ends any grace
    ABSENT     refused, not remembered: a missing tag must not deny the whole
               repository for minutes
    origin unavailable (ask raised BackendUnavailable)
               allowed ("grace") if this key was granted within the last
               `grace` seconds, else refused ("unavailable"); not remembered

Entries are keyed by HMAC-SHA256 of the credential and the repository under a key
of this process's own, so the credential itself (a password, a token) is never
held, and a memory dump does not even tell whose entry is whose. Concurrent
decides for one key share one ask (single flight); both memories keep at most
`capacity` entries, the least recently used going first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import BackendUnavailable
from ..lru import BoundedDict
from ..origin.authorize import Verdict
from ..singleflight import SingleFlight

__all__ = ["Decision", "Decisions", "Outcome"]

Outcome = Literal["granted", "refused", "absent", "grace", "unavailable"]


@dataclass(frozen=True)
class Decision:
    """Whether a client may pull a repository, and how that was decided.

    `asked` is True for the one caller whose decide asked the origin; callers
    answered from memory, and callers that joined an ask already running, get
    False. So the decisions with `asked` count the origin's checks exactly.
    """

    allowed: bool
    outcome: Outcome
    asked: bool


@dataclass(frozen=True)
class _Remembered:
    allowed: bool
    until: float  # on the clock of Decisions


class Decisions:
    """Decisions of the origin, remembered per (credential, repository)."""

    def __init__(
        self,
        ttl: float,
        grace: float,
        capacity: int,
        key: bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._grace = grace
        self._key = key
        self._clock = clock
        self._remembered: BoundedDict[bytes, _Remembered] = BoundedDict(capacity)
        self._granted_at: BoundedDict[bytes, float] = BoundedDict(capacity)  # for grace
        self._asking: SingleFlight[bytes, Decision] = SingleFlight()

    @property
    def grace(self) -> float:
        """Seconds a grant still holds while the origin cannot be asked (0: none)."""
        return self._grace

    @classmethod
    def create(cls, ttl: float, grace: float, capacity: int = 10_000) -> Decisions:
        """Decisions under a random key of their own."""
        return cls(ttl, grace, capacity, secrets.token_bytes(32))

    async def decide(
        self, credential: str | None, repository: str, ask: Callable[[], Awaitable[Verdict]]
    ) -> Decision:
        """Whether the holder of `credential` (None: anonymous) may pull
        `repository`: from memory, or by `ask`ing the origin (once for all
        callers asking the same at the same time). Raises what `ask` raises,
        but BackendUnavailable, which decides by the grace memory instead."""
        key = self.key_of(credential, repository)
        remembered = self._remembered.get(key)
        if remembered is not None and remembered.until > self._clock():
            if remembered.allowed:
                self._granted_at.get(key)  # in use: the last of the grace memory to go
            return Decision(remembered.allowed, _said(remembered.allowed), asked=False)
        starts = not self._asking.running(key)
        decision = await self._asking.run(key, lambda: self._ask(key, ask))
        return decision if starts else Decision(decision.allowed, decision.outcome, asked=False)

    def granted_recently(self, credential: str | None, repository: str) -> bool:
        """Whether a grant for the pair is in memory and still live (no asking)."""
        remembered = self._remembered.get(self.key_of(credential, repository))
        return remembered is not None and remembered.allowed and remembered.until > self._clock()

    def key_of(self, credential: str | None, repository: str) -> bytes:
        """What the pair is remembered under: an HMAC of both, each length-prefixed
        (so no two pairs encode alike), anonymity distinct from an empty credential."""
        message = bytearray()
        if credential is None:
            message += b"\x00"
        else:
            encoded = credential.encode()
            message += b"\x01" + struct.pack(">Q", len(encoded)) + encoded
        message += repository.encode()
        return hmac.new(self._key, bytes(message), hashlib.sha256).digest()

    async def close(self) -> None:
        """Cancel the asks running; their callers get CancelledError."""
        await self._asking.close()

    async def _ask(self, key: bytes, ask: Callable[[], Awaitable[Verdict]]) -> Decision:
        try:
            verdict = await ask()
        except BackendUnavailable:
            granted = self._granted_at.get(key)
            if self._grace > 0 and granted is not None and self._clock() - granted <= self._grace:
                return Decision(True, "grace", asked=True)
            return Decision(False, "unavailable", asked=True)
        now = self._clock()
        if verdict is Verdict.ABSENT:
            self._remembered.pop(key)  # what it held had expired: free its room
            return Decision(False, "absent", asked=True)
        allowed = verdict is Verdict.GRANTED
        self._remembered.put(key, _Remembered(allowed, now + self._ttl))
        if allowed:
            self._granted_at.put(key, now)
        else:
            self._granted_at.pop(key)  # refused since: no grace for it
        return Decision(allowed, _said(allowed), asked=True)


def _said(allowed: bool) -> Outcome:
    return "granted" if allowed else "refused"
