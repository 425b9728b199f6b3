"""What serving hosts note in the bucket for `registry-local gc`: that a
manifest of a repository was served (a use record, at most once per manifest per
`--record-use-every`), and that a manifest came from an origin (its mark). The
object's time is what counts; layout.py draws where they live."""

from __future__ import annotations

import asyncio
import logging
import time

from ..backing.backend import Backend
from ..errors import BackendError
from ..layout import BucketLayout
from ..lru import BoundedDict
from ..oci.digest import Digest
from ..telemetry.logs import error_fields
from ..telemetry.metrics import RetentionRecorder

__all__ = ["RetentionRecords"]

log = logging.getLogger(__name__)

_NOTED_ENTRIES = 100_000  # (repository, manifest) pairs remembered as recently noted


class RetentionRecords:
    """Use records and origin marks of one host. A use record is written in the
    background (a pull never waits for it); one that fails is logged, counted
    and written at the next use."""

    def __init__(
        self, backend: Backend, layout: BucketLayout, every: float, metrics: RetentionRecorder
    ):
        self._backend = backend
        self._layout = layout
        self._every = every
        self._metrics = metrics
        self._noted: BoundedDict[tuple[str, Digest], float] = BoundedDict(_NOTED_ENTRIES)
        self._writes: set[asyncio.Task[None]] = set()

    def served(self, name: str, digest: Digest) -> None:
        """The manifest was served to a client of the repository `name`."""
        if self._every <= 0:
            return
        now = time.monotonic()
        last = self._noted.get((name, digest))
        if last is not None and now - last < self._every:
            return
        self._noted.put((name, digest), now)
        task = asyncio.create_task(self._record(name, digest), name=f"use of {digest}")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record(self, name: str, digest: Digest) -> None:
        try:
            await self._backend.write(self._layout.use_record(name, digest), str(digest).encode())
        except BackendError as exc:
            self._noted.pop((name, digest))
            self._metrics.use_recorded(False)
            log.warning(
                "could not note the use of %s in %s: %s",
                digest,
                name,
                exc,
                extra={"digest": str(digest), "repository": name, **error_fields(exc)},
            )
            return
        self._metrics.use_recorded(True)

    async def from_origin(self, name: str, digest: Digest) -> None:
        """Mark a manifest written through from an origin (before its revision
        link: a linked manifest without a mark counts as pushed, and stays).
        Raises BackendError."""
        await self._backend.write(self._layout.origin_mark(name, digest), str(digest).encode())

    async def settled(self) -> None:
        """Wait for the use records being written (tests, shutdown)."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
