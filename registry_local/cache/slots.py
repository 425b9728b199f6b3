"""A bound on concurrent blob reads from the backing store, served in arrival order.

Fills and uncached reads each hold a slot while a body streams from S3 (not
while they back off between attempts). When all are taken, later readers queue
first come, first served, so one image with many layers cannot starve another.
Small reads (links, tags, manifests) do not take slots: they must not wait
behind large blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from ..metrics import Metrics

__all__ = ["FairSlots"]


class FairSlots:
    def __init__(self, limit: int, metrics: Metrics) -> None:
        self._limit = limit
        self._held = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._metrics = metrics
        metrics.s3_slots.set(0)
        metrics.s3_slot_waiters.set(0)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._held < self._limit and not self._waiters:
            self._held += 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._metrics.s3_slot_waiters.set(len(self._waiters))
            try:
                await waiter  # a releasing holder hands its slot over
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed over just as we were cancelled: pass it on
                else:
                    self._waiters.remove(waiter)
                raise
            finally:
                self._metrics.s3_slot_waiters.set(len(self._waiters))
        self._metrics.s3_slots.set(self._held)
        self._metrics.s3_blob_reads.inc()
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves on, still held
                return
        self._held -= 1
        self._metrics.s3_slots.set(self._held)
