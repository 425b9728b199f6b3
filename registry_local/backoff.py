"""How long to wait before trying again: the one backoff every retry loop draws from.

Exponential, capped, with *full jitter* (Marc Brooker, "Exponential Backoff And
Jitter", AWS Architecture Blog): the pause before the n-th retry is drawn
uniformly from [0, min(cap, base * 2**(n-1))]. Many hosts (or many fills of one
host) that failed at the same moment therefore retry spread over the window
instead of in step, which is what lets S3 recover from SlowDown, and what keeps
a thousand hosts watching one lease from asking in waves.

A leaf: it imports nothing of registry_local. The retry loops themselves stay
with their callers (backing/s3.py, fill/reading.py, fleet/leases.py,
origin/client.py), one loop per call.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

__all__ = ["ExponentialBackoff"]


@dataclass(frozen=True, slots=True)
class ExponentialBackoff:
    """Jittered exponential backoff: `base` seconds before the first retry at
    most, doubling with each retry, never more than `cap`."""

    base: float
    cap: float

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff needs 0 < base <= cap, not {self.base}, {self.cap}")

    def ceiling(self, retry: int) -> float:
        """The longest pause before retry number `retry` (1 for the first)."""
        if retry < 1:
            raise ValueError(f"retries count from 1, not {retry}")
        # Past 2**64 times the base every cap is reached; no float overflow.
        return min(self.cap, self.base * 2.0 ** min(retry - 1, 64))

    def delay(self, retry: int) -> float:
        """The pause before retry number `retry` (1 for the first): drawn
        uniformly from [0, ceiling(retry)]."""
        return random.uniform(0.0, self.ceiling(retry))

    async def pause(self, retry: int, limit: float | None = None) -> None:
        """Sleep for `delay(retry)`, but never more than `limit` seconds if given."""
        delay = self.delay(retry)
        await asyncio.sleep(delay if limit is None else max(0.0, min(delay, limit)))
