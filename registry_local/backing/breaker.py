"""A circuit breaker: stop hammering a backing store that is down.

After `threshold` consecutive failures that a retry might fix (unreachable,
timeouts, 5xx) the circuit opens: calls fail at once, without touching the
network, for a cool-down. Then one call is let through as a probe (half-open):
success closes the circuit, failure opens it again for twice as long, up to a
ceiling. Meanwhile the cache serves what it has (cached blobs, last known
tags) and everything else gets a quick 503.

Back-pressure is no failure: a SlowDown or a 429 is S3 answering, busy, and
counts as an answer (s3.py waits it out), so a fleet past a prefix's request
rate slows down instead of shutting off every read of its hosts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..telemetry.metrics import S3Recorder

__all__ = ["CircuitBreaker"]

log = logging.getLogger(__name__)

CLOSED, HALF_OPEN, OPEN = 0, 1, 2


class CircuitBreaker:
    """Counts a backing store's retryable failures and says whether a call may go to it
    (closed, open or half-open); see the module docstring."""

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        metrics: S3Recorder | None = None,
        max_cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open after `threshold` consecutive failures, for `cooldown` seconds,
        doubling up to `max_cooldown` (S3Settings holds the first two)."""
        self._metrics = metrics
        self._clock = clock
        self._threshold = threshold
        self._base_cooldown = cooldown
        self._cooldown = cooldown
        self._max_cooldown = max_cooldown
        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._last_failure = ""
        self.state = CLOSED
        self._report()

    def why_open(self) -> str:
        """Why calls are refused now, with the failure that opened the circuit."""
        last = f" (last: {self._last_failure})" if self._last_failure else ""
        return f"circuit open: S3 keeps failing{last}"

    def allow(self) -> bool:
        """Whether a call may go to the backing store now."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self._clock() < self._open_until:
                return False
            self.state = HALF_OPEN
            self._probing = False
            self._report()
        if self._probing:
            return False  # one probe at a time
        self._probing = True
        return True

    def success(self) -> None:
        if self.state != CLOSED:
            log.info("backing store answers again: circuit closed")
        self.state = CLOSED
        self._failures = 0
        self._probing = False
        self._cooldown = self._base_cooldown
        self._report()

    def failure(self, reason: str = "") -> None:
        self._failures += 1
        self._last_failure = reason or self._last_failure
        if self.state == HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, self._max_cooldown)
            self._open()
        elif self.state == CLOSED and self._failures >= self._threshold:
            self._open()

    def _open(self) -> None:
        self.state = OPEN
        self._probing = False
        self._open_until = self._clock() + self._cooldown
        log.warning(
            "backing store failing: circuit open for %.1fs (last: %s)",
            self._cooldown,
            self._last_failure or "?",
            extra={"error": self._last_failure or None},
        )
        self._report(opened=True)

    def _report(self, opened: bool = False) -> None:
        if self._metrics is not None:
            self._metrics.circuit(self.state, opened=opened)
