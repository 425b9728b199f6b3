"""The holder's staging of one blob, and the blobs this host stages for the fleet.

While this host holds a blob's lease and fills it from the origin, a Stager
puts each part into the bucket (staging.py) as soon as the fill holds it, and
tells followers' long polls (server/peer.py) what has landed. `Holding` is
what the peer listener sees of them: the blobs this host stages now.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Protocol

from ..errors import FillFailed
from ..oci.digest import Digest
from ..telemetry.metrics import FleetRecorder
from .peers import Progress
from .staging import Staging

__all__ = ["HeldFile", "Holding", "Stager"]


class HeldFile(Protocol):
    """What the fleet needs of this host's fill of the blob (fill/fill.py)."""

    @property
    def path(self) -> Path:
        """The file the fill writes (the temp file, then the committed one)."""

    async def started(self) -> int:
        """The blob's size, once the fill has begun; raises the fill's error."""

    async def held(self, start: int, end: int) -> None:
        """Wait until bytes [start, end) are in the file; raises the fill's error."""

    async def committed(self) -> None:
        """Wait until the blob is verified and committed; raises the fill's error."""


class Stager:
    """The holder's staging of one blob: each part put in the bucket as soon as
    the fill holds it, and who waits to hear of it. `start` begins the staging;
    `finished` ends it."""

    def __init__(
        self,
        staging: Staging,
        digest: Digest,
        fill: HeldFile,
        already: list[tuple[int, int]],
        metrics: FleetRecorder,
    ) -> None:
        self._metrics = metrics
        self._staging = staging
        self._digest = digest
        self._fill = fill
        self._fd: int | None = None
        self.spans: list[tuple[int, int]] = list(already)
        self.size: int | None = None
        self.done = False  # the final object is in the bucket, and linked
        self.streams = 0  # followers granted a stream of this fill (server/peer.py)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Stager:
        """Open the fill's file (read through its rename) and stage in the background."""
        self._fd = os.open(self._fill.path, os.O_RDONLY | os.O_CLOEXEC)
        self._task = asyncio.create_task(self._run(), name=f"stage {self._digest}")
        return self

    async def _run(self) -> None:
        size = self.size = await self._fill.started()
        self._announce()
        if not self._staging.stages(size):
            return  # written whole once verified
        for span in self._staging.spans(size):
            if span in self.spans:
                continue  # staged by the holder before us
            await self._fill.held(*span)
            await self._put(span)

    async def _put(self, span: tuple[int, int]) -> None:
        assert self._fd is not None
        start, end = span
        # Read from the file as it is sent, through the descriptor held since the
        # start, which reads on through the rename at commit. The backend retries.
        await self._staging.put(self._digest, start, end, Path(f"/dev/fd/{self._fd}"))
        self._metrics.staged(end - start)
        self.spans.append(span)
        self.spans.sort()
        self._announce()

    def grant_stream(self, limit: int) -> bool:
        """Whether one more follower may stream this fill: at most `limit` ever
        do, so no host sends more than `limit` times the blob."""
        if self.streams >= limit:
            return False
        self.streams += 1
        return True

    def _announce(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def complete(self) -> list[tuple[int, int]] | None:
        """Every part staged (the rest from the committed file, should staging
        have lagged); the spans, in order. None for a blob of one part: it is
        not staged."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, FillFailed):
                await self._task
        assert self.size is not None
        if not self._staging.stages(self.size):
            return None
        for span in self._staging.spans(self.size):
            if span not in self.spans:
                await self._put(span)
        return list(self.spans)

    def finished(self, in_bucket: bool) -> None:
        """The blob is in the bucket whole (`in_bucket`), or this host gave up."""
        self.done = in_bucket
        if self._task is not None:
            self._task.cancel()
        self._announce()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def beyond(self, have: int, patience: float) -> Progress:
        """What is staged, once more than `have` parts are (or the blob is done,
        or `patience` seconds passed): for a follower's long poll."""
        if len(self.spans) <= have and not self.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), patience)
        return Progress(self.size, list(self.spans), self.done)


class Holding:
    """The blobs this host holds the lease of and stages now, by digest: what
    the peer listener serves followers' streams and long polls from."""

    def __init__(self) -> None:
        self._stagers: dict[Digest, Stager] = {}

    def get(self, digest: Digest) -> Stager | None:
        """The staging of `digest`, if this host holds its lease now."""
        return self._stagers.get(digest)

    def add(self, digest: Digest, stager: Stager) -> None:
        """This host stages `digest` now."""
        self._stagers[digest] = stager

    def remove(self, digest: Digest, stager: Stager) -> None:
        """This host no longer stages `digest` with `stager`."""
        if self._stagers.get(digest) is stager:
            del self._stagers[digest]
