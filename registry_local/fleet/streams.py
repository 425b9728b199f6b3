"""Streams a follower reads a blob through: staged parts counted, and one
stream spliced from several sources in turn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..backing.backend import ObjectStream
from ..errors import BackendUnavailable
from ..telemetry.metrics import FleetRecorder

__all__ = ["CountedStream", "SplicedStream"]


class CountedStream:
    """A staged part's bytes as a follower reads them, counted."""

    def __init__(self, stream: ObjectStream, metrics: FleetRecorder) -> None:
        self._stream = stream
        self._metrics = metrics
        self.size = stream.size

    async def read(self, n: int) -> bytes:
        chunk = await self._stream.read(n)
        self._metrics.staged_read(len(chunk))
        return chunk

    async def close(self) -> None:
        await self._stream.close()


class SplicedStream:
    """One stream of a blob from several sources in turn (staged parts, then the
    origin or the final object): whichever holds the next byte, opened when the
    bytes reach it."""

    def __init__(
        self,
        size: int,
        offset: int,
        end: int | None,
        segment: Callable[[int, int | None], Awaitable[ObjectStream | None]],
    ) -> None:
        self.size = size
        self._position = offset
        self._stop = size if end is None else min(end, size)
        self._segment = segment
        self._current: ObjectStream | None = None

    async def read(self, n: int) -> bytes:
        while self._position < self._stop:
            if self._current is None:
                self._current = await self._segment(self._position, self._stop)
                if self._current is None:
                    raise BackendUnavailable("GetObject", "staged", "the next part went away")
            chunk = await self._current.read(min(n, self._stop - self._position))
            if chunk:
                self._position += len(chunk)
                return chunk
            await self._current.close()  # that part is done: the next one
            self._current = None
        return b""

    async def close(self) -> None:
        if self._current is not None:
            await self._current.close()
            self._current = None
