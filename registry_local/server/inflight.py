"""The requests being answered: counted, awaitable until none, cancellable at shutdown."""

from __future__ import annotations

import asyncio

__all__ = ["InFlight"]


class InFlight:
    """Requests being answered (their handler tasks); awaitable until there are none."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False  # set once shutdown has begun

    @property
    def count(self) -> int:
        return len(self._tasks)

    def enter(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._idle.clear()

    def leave(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()

    async def drain(self, grace: float, cancel_wait: float) -> int:
        """Wait up to `grace` seconds for the requests to finish, then cancel those
        left and wait up to `cancel_wait` for them to end. Returns how many were cut."""
        self.draining = True
        if self._tasks:
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                pass
        left = list(self._tasks)
        for task in left:
            task.cancel("shutting down")
        if left:
            await asyncio.wait(left, timeout=cancel_wait)
        return len(left)
