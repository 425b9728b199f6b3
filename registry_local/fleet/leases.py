"""Leases in the bucket: which host reads a blob (or resolves a tag) for the fleet.

A lease is a small object beside distribution's tree (layout.py draws where),
written with S3's conditional writes, so the bucket every host already shares is
the only coordinator:

- take: create it only if absent (If-None-Match: *); one host wins, the others
  learn who holds it;
- renew: the holder rewrites it every third of its time to live, only over the
  version it wrote (If-Match), so a host that lost it finds out;
- take over: a lease whose version has not changed for its whole time to live,
  on the observer's own clock, belongs to a host that died; it is replaced over
  that version (If-Match), so only one observer wins;
- release: the holder deletes it once its work is in the bucket.

Expiry is judged by each observer's monotonic clock, never by comparing hosts'
wall clocks, so clock skew between hosts cannot make a live lease look dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass

from ..backing.backend import Backend
from ..backoff import ExponentialBackoff
from ..errors import BackendError, BackendUnavailable
from ..layout import BucketLayout
from ..telemetry.logs import error_fields
from ..telemetry.metrics import FleetRecorder

__all__ = ["Backoff", "Lease", "Leases"]

log = logging.getLogger(__name__)

_MAX_LEASE_BYTES = 4096
# Pauses between looks at a lease (or the bucket): at most 20 ms at first, doubling
# up to 2 s, each drawn at random below that (backoff.py): a holder that answers at
# once is seen at once, and a host waiting long on another asks about once a second,
# a thousand hosts not in step. Blob followers wait on the holder's long poll
# instead (fleet/blobs.py).
_LOOKS = ExponentialBackoff(base=0.02, cap=2.0)


class Backoff:
    """Pauses between looks at the bucket while another host works: growing,
    jittered, and bounded in all by `limit` seconds."""

    def __init__(self, limit: float, key: str) -> None:
        self._deadline = time.monotonic() + limit
        self._looks = 0
        self._key = key

    async def pause(self) -> None:
        """Raises BackendUnavailable once the limit has passed."""
        left = self._deadline - time.monotonic()
        if left < 0:
            raise BackendUnavailable("lease", self._key, "another host holds it for too long")
        self._looks += 1
        await _LOOKS.pause(self._looks, left)


@dataclass(frozen=True, slots=True)
class Seen:
    """Another host's lease, as observed: unchanged since `since` (monotonic)."""

    key: str
    version: str
    holder: str | None  # its peer URL; None when the body is not ours to read
    host: str | None
    ttl: float
    since: float

    def stale(self, now: float) -> bool:
        return now - self.since >= self.ttl


class Held:
    """A lease this host holds, renewed in the background until released."""

    def __init__(self, leases: Leases, key: str, version: str, taken_over: bool) -> None:
        self._leases = leases
        self.key = key
        self.version = version
        self.taken_over = taken_over  # from a holder that died: its work may be half done
        self.lost = False
        self._released = False
        self._renewal: asyncio.Task[None] | None = None

    def start(self) -> Held:
        """Begin renewing it in the background; returns itself."""
        self._renewal = asyncio.create_task(self._renew(), name=f"lease {self.key}")
        return self

    async def _renew(self) -> None:
        interval = self._leases.ttl / 3
        serial = 0
        while True:
            await asyncio.sleep(interval)
            serial += 1
            try:
                version = await self._leases.backend.replace(
                    self.key, self._leases.body(serial), self.version
                )
            except BackendError as exc:
                log.warning(
                    "could not renew lease %s: %s",
                    self.key,
                    exc,
                    extra={"lease": self.key, **error_fields(exc)},
                )
                continue  # it stays valid for a while yet: try again next time
            if version is None:
                self.lost = True
                self._leases.metrics.lease("refused")
                log.warning(
                    "lease %s was taken over by another host", self.key, extra={"lease": self.key}
                )
                return
            self.version = version
            log.debug("renewed lease %s", self.key, extra={"lease": self.key})

    async def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours; safe to call twice."""
        if self._released:
            return
        self._released = True
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        if self.lost:
            return
        try:
            found = await self._leases.backend.read_versioned(self.key, _MAX_LEASE_BYTES)
            if found is not None and found[1] == self.version:
                await self._leases.backend.delete(self.key)
                log.debug("released lease %s", self.key, extra={"lease": self.key})
        except BackendError as exc:
            # It expires by itself: others take it over after its time to live.
            log.warning(
                "could not release lease %s: %s",
                self.key,
                exc,
                extra={"lease": self.key, **error_fields(exc)},
            )


class Leases:
    """Taking, watching and taking over leases in one backing store. Callers
    follow one key through a `Lease` (`lease(key)`)."""

    def __init__(
        self,
        backend: Backend,
        layout: BucketLayout,
        holder: str,
        ttl: float,
        metrics: FleetRecorder,
    ) -> None:
        self.backend = backend
        self.layout = layout
        self.holder = holder  # this host's peer URL
        self.host = uuid.uuid4().hex  # this process, for telling restarts apart
        self.ttl = ttl
        self.metrics = metrics

    def lease(self, key: str) -> Lease:
        """The lease `key` as this host will follow it (nothing is asked yet)."""
        return Lease(self, key)

    def body(self, serial: int = 0) -> bytes:
        return json.dumps(
            {"holder": self.holder, "host": self.host, "ttl": self.ttl, "serial": serial},
            separators=(",", ":"),
        ).encode()

    async def take(self, key: str) -> Held | Seen | None:
        """The lease, if it was free; else who holds it (None: it vanished as
        we looked, try again). Raises BackendError."""
        version = await self.backend.create(key, self.body())
        if version is not None:
            self.metrics.lease("taken")
            log.debug("took lease %s", key, extra={"lease": key})
            return Held(self, key, version, taken_over=False).start()
        seen = await self.look(key)
        if seen is not None:
            self.metrics.lease("followed")
            log.debug(
                "lease %s is held by %s: following it",
                key,
                seen.holder,
                extra={"lease": key, "holder": seen.holder},
            )
        return seen

    async def look(self, key: str, before: Seen | None = None) -> Seen | None:
        """The lease as it is now (None: there is none). `before` carries the time
        its version was first seen, so expiry is measured on this host's clock."""
        found = await self.backend.read_versioned(key, _MAX_LEASE_BYTES)
        if found is None:
            return None
        data, version = found
        if before is not None and before.version == version:
            return before
        holder, host, ttl = _parse(data)
        return Seen(key, version, holder, host, ttl or self.ttl, time.monotonic())

    def abandoned(self, seen: Seen) -> bool:
        """True if the holder is dead: the lease went unrenewed for its time to
        live, or it names this host's URL with another process's id (this host
        restarted while holding it)."""
        if seen.holder == self.holder and seen.host not in (None, self.host):
            return True
        return seen.stale(time.monotonic())

    async def take_over(self, seen: Seen) -> Held | None:
        """Replace an abandoned lease; None if another host changed it first."""
        version = await self.backend.replace(seen.key, self.body(), seen.version)
        if version is None:
            self.metrics.lease("refused")
            return None
        self.metrics.lease("taken_over")
        log.warning(
            "took over lease %s from %s",
            seen.key,
            seen.holder or "an unknown holder",
            extra={"lease": seen.key, "holder": seen.holder},
        )
        return Held(self, seen.key, version, taken_over=True).start()

    async def probe(self) -> bool:
        """Whether the store refuses a second create of one key, as leases need.
        Raises BackendError when the store cannot be asked."""
        key = self.layout.probe(uuid.uuid4().hex)
        try:
            first = await self.backend.create(key, b"{}")
            second = await self.backend.create(key, b"{}")
            return first is not None and second is None
        finally:
            with contextlib.suppress(BackendError):
                await self.backend.delete(key)


class Lease:
    """One lease key as this host follows it: held here (`mine`), held by
    another host (`other`, with its peer URL as `holder`), or neither (not
    looked at yet, or it vanished as we looked). `take` asks for it, `advance`
    looks again after a pause (taking it when it is free or abandoned),
    `release` gives it back. As an async context manager it is released on exit."""

    def __init__(self, leases: Leases, key: str) -> None:
        self._leases = leases
        self.key = key
        self._state: Held | Seen | None = None

    @property
    def mine(self) -> bool:
        """This host holds it."""
        return isinstance(self._state, Held)

    @property
    def other(self) -> bool:
        """Another host holds it."""
        return isinstance(self._state, Seen)

    @property
    def holder(self) -> str | None:
        """The other host's peer URL (None: not another's, or not ours to read)."""
        return self._state.holder if isinstance(self._state, Seen) else None

    @property
    def taken_over(self) -> bool:
        """Held here after a holder that died: its work may be half done."""
        return isinstance(self._state, Held) and self._state.taken_over

    async def take(self) -> None:
        """Ask for it: afterwards it is mine, another's, or neither. Raises BackendError."""
        self._state = await self._leases.take(self.key)

    async def advance(self) -> None:
        """Look again (after a pause): take it if it is gone, take it over if its
        holder died. Raises BackendError."""
        leases, seen = self._leases, self._state
        if isinstance(seen, Held):
            return
        if seen is not None:
            current = await leases.look(self.key, seen)
            if current is not None and not leases.abandoned(current):
                self._state = current
                return
            if current is not None:
                self._state = await leases.take_over(current) or await leases.look(self.key)
                return
        self._state = await leases.take(self.key)

    async def take_over(self) -> None:
        """Replace another host's lease although it looks alive (its owner
        judged it dead by other means). Raises BackendError."""
        if isinstance(self._state, Seen):
            self._state = await self._leases.take_over(self._state)

    async def until_released(self, limit: float) -> None:
        """Wait, bounded by `limit` seconds, until the other host lets go of it;
        if it died, take it over (mine afterwards), unless another host did
        first: then wait for that one. Raises BackendError, BackendUnavailable."""
        waiting = Backoff(limit, self.key)
        leases = self._leases
        while isinstance(self._state, Seen):
            seen = self._state
            if leases.abandoned(seen):
                self._state = await leases.take_over(seen) or await leases.look(self.key)
                continue
            await waiting.pause()
            self._state = await leases.look(self.key, seen)

    async def release(self) -> None:
        """Give it back if it is mine (safe to call twice); forget another's."""
        state, self._state = self._state, None
        if isinstance(state, Held):
            await state.release()

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


def _parse(data: bytes) -> tuple[str | None, str | None, float | None]:
    """Holder URL, host id and time to live from a lease body; Nones for what is
    not there (a lease written by a later version, or damaged)."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    holder, host, ttl = body.get("holder"), body.get("host"), body.get("ttl")
    return (
        holder if isinstance(holder, str) else None,
        host if isinstance(host, str) else None,
        float(ttl) if isinstance(ttl, int | float) and ttl > 0 else None,
    )
