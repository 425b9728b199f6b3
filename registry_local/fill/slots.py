"""A bound on concurrent blob reads from the backing store, shared fairly.

Fills and uncached reads each hold a slot while a body streams from S3 (not
while they back off between attempts). When all are taken, later readers
queue. Readers belong to an owner (a fill reading several parts at once is one
owner; a reader without one is an owner of its own), and a freed slot goes to
the owners in turn, each owner's readers first come, first served: one fill
with many parts, or one image with many layers, cannot starve another.
Owners marked as background (prefetches nobody asked for yet) get a freed slot
only when no other owner waits, until a client joins them; urgent reads (the
bytes of a range a client waits for) get one before anyone else. Small reads (links,
tags, manifests) do not take slots: they must not wait behind large blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from ..telemetry.metrics import S3Recorder

__all__ = ["FairSlots"]

_URGENT = object()  # the queue of reads a client waits for byte by byte: served first


class FairSlots:
    """A bounded set of backing-store read slots, handed out in turn per owner
    (urgent first, background last); see the module docstring."""

    def __init__(self, limit: int, metrics: S3Recorder) -> None:
        self._limit = limit
        self._held = 0
        # owner -> its waiting readers; owners in the order they are served next
        self._queues: dict[object, deque[asyncio.Future[None]]] = {}
        self._waiting = 0
        self._background: set[object] = set()  # owners served after all others
        self._metrics = metrics
        metrics.slots(0, 0)

    @contextlib.asynccontextmanager
    async def slot(self, owner: object = None, urgent: bool = False) -> AsyncIterator[None]:
        await self.acquire(owner, urgent)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, owner: object = None, urgent: bool = False) -> None:
        """Take a slot, waiting for one if all are held; `urgent` (a reader waits
        for these very bytes) goes before every owner's queue. Give it back with
        `release`."""
        if self._held < self._limit and not self._waiting:
            self._held += 1
        else:
            await self._queue(_URGENT if urgent else object() if owner is None else owner)
        self._report()
        self._metrics.blob_read()

    def release(self) -> None:
        """Give back a slot `acquire` took: it goes to the next waiter in turn."""
        self._release()

    async def _queue(self, owner: object) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._queues.setdefault(owner, deque()).append(waiter)
        self._waiting += 1
        self._report()
        try:
            await waiter  # a releasing holder hands its slot over
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed over just as we were cancelled: pass it on
            else:
                self._forget(owner, waiter)
            raise

    def _forget(self, owner: object, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(owner)
        if queue is None or waiter not in queue:
            return  # already passed over by a release
        queue.remove(waiter)
        if not queue:
            del self._queues[owner]
        self._waiting -= 1
        self._report()

    def background(self, owner: object) -> None:
        """Serve `owner` after every other owner (a prefetch), until `foreground`."""
        self._background.add(owner)

    def foreground(self, owner: object) -> None:
        """Serve `owner` in turn again (a client now waits for it); also when it ends."""
        self._background.discard(owner)

    def _next_owner(self) -> object:
        if _URGENT in self._queues:
            return _URGENT
        for owner in self._queues:
            if owner not in self._background:
                return owner
        return next(iter(self._queues))

    def _release(self) -> None:
        while self._queues:
            owner = self._next_owner()
            queue = self._queues.pop(owner)
            waiter = queue.popleft()
            if queue:
                self._queues[owner] = queue  # to the back: the next owner goes first
            self._waiting -= 1
            self._report()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves on, still held
                return
        self._held -= 1
        self._report()

    def _report(self) -> None:
        self._metrics.slots(self._held, self._waiting)
