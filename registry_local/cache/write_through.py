"""Writing what came from an origin registry through to the bucket.

Each repository a request read a blob from an origin in ends up linking it in
the bucket: once the fill that brought it has ended (with the fleet's own
write of it, under its lease, when hosts coordinate), the blob is uploaded
unless the bucket has it already, then linked into the repository, in that
order, so the bucket never links content it does not hold. This runs in the
background: readers never wait for it. If it fails, the blob is still served
from this host, and the next host to miss it fetches it from the origin again;
the failure is logged and counted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..backing.distribution import DistributionStore
from ..disk.store import DiskStore
from ..errors import BackendError
from ..fill.sources import FillRun
from ..oci.digest import Digest
from ..telemetry.metrics import OriginRecorder
from ..telemetry.writes import write_failed
from .links import LinkCache

__all__ = ["WriteThrough"]


class WriteThrough:
    """The uploads and links of blobs from origins, one at a time per
    repository and blob."""

    def __init__(
        self, store: DistributionStore, disk: DiskStore, links: LinkCache, metrics: OriginRecorder
    ) -> None:
        self._store = store
        self._disk = disk
        self._links = links
        self._metrics = metrics
        self._tasks: dict[tuple[str, Digest], asyncio.Task[None]] = {}

    def blob(self, name: str, digest: Digest, fill: FillRun | None) -> None:
        """Upload and link the blob into `name` once `fill` (None: committed
        already) has ended, unless `name` links it already."""
        key = (name, digest)
        if key in self._tasks or self._links.known_blob(name, digest):
            return
        task = asyncio.create_task(self._blob(name, digest, fill), name=f"through {digest}")
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def _blob(self, name: str, digest: Digest, fill: FillRun | None) -> None:
        if fill is not None:
            await fill.ended()
        if self._links.known_blob(name, digest):
            return  # linked by the fleet's holder of the blob
        found = self._disk.blob(digest)
        if found is None:
            return  # not committed (the fill failed), or evicted already
        path, _ = found
        try:
            written = await self._store.put_blob_file(digest, Path(path))
            await self._store.link_blob(name, digest)
            await self._links.learned_blob(name, digest)
        except (BackendError, OSError) as exc:
            write_failed(self._metrics, name, digest, exc)
            return
        if written:  # counted once per blob the bucket did not have
            self._metrics.written_through("blob")

    async def settled(self) -> None:
        """Wait for every write-through under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
