"""Reading bytes of a blob from where it comes from, resuming after breaks.

A broken or stalled body is read again from the byte reached (a Range request),
with backoff; `attempts` consecutive failures without progress end the read.
Fills, their pieces and uncached (bypass) responses all read through this; the
source (sources.py) decides what an attempt holds while its body streams (a
read from the bucket holds one of the bounded S3 slots, slots.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from ..backing.backend import ObjectStream
from ..backoff import ExponentialBackoff
from ..errors import BackendUnavailable, BlobUnknown, FillFailed
from ..oci.digest import Digest
from ..telemetry.metrics import FillRecorder

__all__ = ["CHUNK", "Open", "Reading", "RetryPolicy", "read_resuming"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_RESUMES = ExponentialBackoff(base=0.1, cap=5.0)

# Open bytes [offset, end) of the blob (to its end when end is None); None if
# there is no such blob. Raises BackendUnavailable for what a retry may fix.
Open = Callable[[int, int | None], Awaitable[ObjectStream | None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a read resumes."""

    attempts: int  # consecutive failures without progress before giving up


@dataclass(frozen=True)
class Reading:
    """What every read of a blob shares: how it resumes, where it is counted."""

    retry: RetryPolicy
    metrics: FillRecorder


async def read_resuming(
    open_: Open,
    digest: Digest,
    retry: RetryPolicy,
    on_retry: Callable[[], None],
    start: int = 0,
    end: int | None = None,
    *,
    size: int | None = None,
    on_size: Callable[[int], None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """Bytes [start, end or size) of the blob, in order, each attempt a read of
    just that range. `size`, when the caller knows it, is what every answer
    must say; `on_size` hears it once it is known; `on_retry` each resumption.
    Raises BlobUnknown if there is no such blob, FillFailed when the source keeps
    failing or the blob changes under us."""
    position, failures = start, 0
    known = -1 if size is None else size  # what every answer must say, once known
    stop = -1  # unknown until the first answer
    while stop < 0 or position < stop:
        try:
            stream = await open_(position, end)
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
            # Jittered, so the fills a fault broke at once do not all come back at once.
            await _RESUMES.pause(failures)
