"""Reading a blob from the backing store to its end, resuming after breaks.

A broken or stalled body is read again from the byte reached (a Range request),
with backoff; `attempts` consecutive failures without progress end the read.
Fills and uncached (bypass) responses both read through this, each attempt
holding one of the bounded S3 slots (slots.py) while its body streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol

from ..backing.backend import ObjectStream
from ..errors import BackendUnavailable, BlobUnknown, FillFailed
from ..oci.digest import Digest
from .slots import FairSlots

__all__ = ["CHUNK", "BlobSource", "RetryPolicy", "read_resuming"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class BlobSource(Protocol):
    """Where a fill reads a blob: the backing store (DistributionStore) or an
    origin registry's repository (origin/mapping.py)."""

    async def open_blob(
        self, digest: Digest, offset: int = 0, end: int | None = None
    ) -> ObjectStream | None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a read resumes."""

    attempts: int  # consecutive failures without progress before giving up
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2 ** (failures - 1)))


async def read_resuming(
    store: BlobSource,
    digest: Digest,
    retry: RetryPolicy,
    slots: FairSlots,
    on_size: Callable[[int], None] | None,
    on_retry: Callable[[], None],
    start: int = 0,
    end: int | None = None,
    owner: object = None,
    size: int | None = None,
) -> AsyncGenerator[bytes, None]:
    """Bytes [start, end or size) of the blob, in order, each attempt a read of
    just that range; `on_size` hears the size once it is known, `on_retry` each
    resumption; `owner` shares slots fairly (slots.py); `size`, when the caller
    knows it, is what every answer must say. Raises BlobUnknown if there is no
    such blob, FillFailed when the backing store keeps failing or the blob
    changes under us."""
    position, failures = start, 0
    known = -1 if size is None else size  # what every answer must say, once known
    stop = -1  # unknown until the first answer
    while stop < 0 or position < stop:
        try:
            async with slots.slot(owner):
                stream = await store.open_blob(digest, position, end)
                if stream is None:
                    if stop < 0:
                        raise BlobUnknown(detail={"digest": str(digest)})
                    raise FillFailed(str(digest), "blob vanished from the backing store")
                try:
                    if known >= 0 and stream.size != known:
                        raise FillFailed(str(digest), "blob changed size in the backing store")
                    if stop < 0:
                        known = stream.size
                        stop = known if end is None else min(end, known)
                        if on_size is not None:
                            on_size(known)
                    while position < stop:
                        chunk = await stream.read(min(CHUNK, stop - position))
                        if not chunk:
                            raise BackendUnavailable("GetObject", str(digest), "body ended early")
                        position += len(chunk)
                        failures = 0
                        yield chunk
                finally:
                    await stream.close()
        except BackendUnavailable as exc:
            failures += 1
            if failures > retry.attempts:
                raise FillFailed(str(digest), f"backing store kept failing: {exc}") from None
            on_retry()
            log.info("read of %s resumes at byte %d after: %s", digest, position, exc)
            await asyncio.sleep(retry.delay(failures))
