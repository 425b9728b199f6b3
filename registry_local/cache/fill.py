"""A fill: one blob copied from the backing store into the cache, as a task of its own.

The fill streams the object into a temp file, hashing as it writes. Readers (the
request that started it and every request that joined) follow the growing file
and are woken on each chunk, so they get bytes as soon as the fill has them.
The last byte is held back until the digest is verified: a corrupt blob is never
served whole, so a client always sees a short body rather than wrong content.

On a broken or stalled read the fill resumes from the byte reached, with backoff,
a bounded number of times. A digest mismatch, a backing store that keeps
failing, or a shutdown ends the fill with an error; nothing is committed and
every reader is released with that error. The task never depends on any reader
staying connected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..digest import Digest
from ..errors import BackendError, BackendUnavailable, BlobUnknown, DigestMismatch, FillFailed
from ..metrics import Metrics
from ..storage.distribution import DistributionStore
from ..storage.local import LocalStore, TempBlob

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["Fill", "RetryPolicy"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a fill resumes a broken read."""

    attempts: int = 5  # consecutive failures without progress before giving up
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2 ** (failures - 1)))


class Fill:
    """One blob on its way into the cache; see the module docstring."""

    def __init__(
        self,
        digest: Digest,
        store: DistributionStore,
        local: LocalStore,
        retry: RetryPolicy,
        metrics: Metrics,
    ) -> None:
        self.digest = digest
        self._store = store
        self._local = local
        self._retry = retry
        self._metrics = metrics
        self._temp: TempBlob = local.new_temp()
        self.path: Path = self._temp.path  # the temp file, then the committed one
        self.size: int | None = None
        self.retries = 0
        self.joiners = 0
        self._written = 0
        self._committed = False
        self._error: BaseException | None = None
        self._progress = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"fill {digest}")

    # -- what readers use ------------------------------------------------------

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def readable(self) -> int:
        """Bytes that may be sent now: all once committed, else all but the last."""
        if self._committed or self.size is None:
            return self._written
        return min(self._written, self.size - 1)

    async def started(self) -> int:
        """The blob's size, once the backing store has said it; raises the fill's error."""
        while self.size is None:
            await self._wait()
        return self.size

    async def readable_beyond(self, offset: int) -> int:
        """Wait until more than `offset` bytes are readable; return how many are."""
        while self.readable <= offset:
            await self._wait()
        return self.readable

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        await self._progress.wait()
        if self._error is not None:
            raise self._error

    def _notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    # -- the task ----------------------------------------------------------------

    async def _run(self) -> None:
        began = time.monotonic()
        self._metrics.fills_started.inc()
        self._metrics.fills_in_flight.inc()
        outcome = "failed"
        try:
            hasher = self.digest.hasher()
            await self._copy(hasher)
            if not self.digest.matches(hasher):
                outcome = "digest_mismatch"
                raise DigestMismatch(
                    str(self.digest), f"{self.digest.algorithm}:{hasher.hexdigest()}"
                )
            await self._local.sync(self._temp)
            self.path = self._local.publish(self._temp, self.digest, self._written)
            self._committed = True
            outcome = "committed"
            self._notify()
            await self._local.sync_dir(self.path)
        except asyncio.CancelledError:
            if not self._committed:
                outcome = "cancelled"
                self._fail(FillFailed(str(self.digest), "shutting down"))
            raise
        except BlobUnknown as exc:
            outcome = "absent"
            self._fail(exc)
        except (FillFailed, BackendError) as exc:
            self._fail(exc)
        except OSError as exc:
            self._fail(FillFailed(str(self.digest), f"cache write failed: {exc.strerror}"))
        finally:
            self._metrics.fills_in_flight.dec()
            self._metrics.fills_finished.labels(outcome).inc()
            self._metrics.fill_duration.labels(outcome).observe(time.monotonic() - began)
            level = logging.INFO if outcome in ("committed", "absent") else logging.WARNING
            log.log(
                level,
                "fill %s",
                outcome,
                extra={
                    "event": "fill",
                    "digest": str(self.digest),
                    "size": self.size,
                    "duration": round(time.monotonic() - began, 6),
                    "joiners": self.joiners,
                    "retries": self.retries,
                    "outcome": outcome,
                    "error": str(self._error) if self._error else None,
                },
            )

    def _fail(self, error: BaseException) -> None:
        if not self._committed:
            self._local.discard(self._temp)
        self._error = error
        self._notify()

    async def _copy(self, hasher: _Hash) -> None:
        failures = 0
        while True:
            written_before = self._written
            try:
                await self._copy_from(self._written, hasher)
                return
            except BackendUnavailable as exc:
                failures = 1 if self._written > written_before else failures + 1
                if failures > self._retry.attempts:
                    raise FillFailed(
                        str(self.digest), f"backing store kept failing: {exc}"
                    ) from None
                self.retries += 1
                self._metrics.fill_retries.inc()
                log.info("fill %s resumes at byte %d after: %s", self.digest, self._written, exc)
                await asyncio.sleep(self._retry.delay(failures))

    async def _copy_from(self, offset: int, hasher: _Hash) -> None:
        stream = await self._store.open_blob(self.digest, offset)
        if stream is None:
            if offset == 0:
                raise BlobUnknown(detail={"digest": str(self.digest)})
            raise FillFailed(str(self.digest), "blob vanished from the backing store")
        try:
            if self.size is None:
                self.size = stream.size
                self._notify()
            elif stream.size != self.size:
                raise FillFailed(str(self.digest), "blob changed size in the backing store")
            loop = asyncio.get_running_loop()
            while self._written < self.size:
                chunk = await stream.read(CHUNK)
                if not chunk:
                    raise BackendUnavailable("GetObject", str(self.digest), "body ended early")
                if self._written + len(chunk) > self.size:
                    raise FillFailed(str(self.digest), "backing store sent more than the size")
                await loop.run_in_executor(
                    None, _absorb, self._temp.fd, hasher, chunk, self._written
                )
                self._written += len(chunk)
                self._metrics.fill_bytes.inc(len(chunk))
                self._notify()
        finally:
            await stream.close()


def _absorb(fd: int, hasher: _Hash, chunk: bytes, offset: int) -> None:
    """Hash and write one chunk; runs in a thread (both release the GIL)."""
    hasher.update(chunk)
    view = memoryview(chunk)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
