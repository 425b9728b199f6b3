"""Writing what came from an origin registry through to the bucket.

After a blob from an origin is verified and committed here, it is uploaded to
the bucket (unless the bucket has it already) and linked into the repository,
in that order, so the bucket never links content it does not hold. This runs
in the background: readers never wait for it. If it fails, the blob is still
served from this host, and the next host to miss it fetches it from the origin
again; the failure is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..backing.distribution import DistributionStore
from ..disk.store import DiskStore
from ..errors import BackendError, FillFailed
from ..fill.fill import Fill
from ..fleet.coordination import FleetBlob
from ..oci.digest import Digest
from ..telemetry.logs import error_fields
from ..telemetry.metrics import Metrics
from .links import LinkCache

__all__ = ["WriteThrough", "write_failed"]

log = logging.getLogger(__name__)


class WriteThrough:
    def __init__(
        self, store: DistributionStore, disk: DiskStore, links: LinkCache, metrics: Metrics
    ) -> None:
        self._store = store
        self._disk = disk
        self._links = links
        self._metrics = metrics
        # One task per repository and fill (its joiners ask again; a later fill
        # of the same blob is a new one).
        self._tasks: dict[tuple[str, Digest, Fill | None], asyncio.Task[None]] = {}

    def blob(
        self, name: str, digest: Digest, fill: Fill | None, fleet_blob: FleetBlob | None = None
    ) -> None:
        """Upload and link the blob once it is committed here (once per name).
        With `fleet_blob`, the fleet's lease is released once this is done; a
        host that followed another leaves the upload to that host."""
        key = (name, digest, fill)
        if key not in self._tasks:
            task = asyncio.create_task(
                self._blob(name, digest, fill, fleet_blob), name=f"through {digest}"
            )
            self._tasks[key] = task
            task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def _blob(
        self, name: str, digest: Digest, fill: Fill | None, fleet_blob: FleetBlob | None
    ) -> None:
        try:
            if fleet_blob is not None:
                # The fleet writes it (staged parts composed, or whole) and lets
                # its lease go; a follower only links what its repository lacks.
                await fleet_blob.finish(name, lambda: self._links.learned_blob(name, digest))
                return
            if fill is not None:
                await fill.committed()
            found = self._disk.blob(digest)
            if found is None:
                return  # evicted already: the next miss fetches it again
            path, _ = found
            written = await self._store.put_blob_file(digest, Path(path))
            await self._store.link_blob(name, digest)
            await self._links.learned_blob(name, digest)
            if written:  # counted once per blob the bucket did not have
                self._metrics.origin_written_through("blob")
        except FillFailed:
            return  # nothing was committed: nothing to write
        except (BackendError, OSError) as exc:
            write_failed(self._metrics, name, digest, exc)

    async def settled(self) -> None:
        """Wait for every write-through under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)


def write_failed(metrics: Metrics, name: str, digest: Digest, exc: BaseException) -> None:
    """Something fetched from an origin could not be written to the bucket: the
    client is served all the same; the next host asks the origin again."""
    metrics.origin_write_failed()
    log.warning(
        "could not write %s of %s through to the bucket: %s",
        digest,
        name,
        exc,
        extra={"repository": name, "digest": str(digest), **error_fields(exc)},
    )
