"""Counting the requests being answered, awaitable until there are none."""

from __future__ import annotations

import asyncio

__all__ = ["InFlight"]


class InFlight:
    """Requests being answered; awaitable until there are none."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()
