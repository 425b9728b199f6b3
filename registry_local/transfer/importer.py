"""`registry-local import`: an OCI layout or docker-archive into the backing store."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from ..backing.distribution import DistributionStore
from ..oci.digest import Digest
from ..progress import Progress
from .files import open_files
from .image_writer import write_image
from .sources import Plan, plan_import

__all__ = ["import_image"]


async def import_image(
    store: DistributionStore,
    source: Path,
    name: str,
    tag: str,
    ref: str | None,
    scratch: Path | None = None,
) -> Digest:
    """Read, verify and write the image; the digest `name:tag` now names."""
    with tempfile.TemporaryDirectory(prefix="registry-local-import-", dir=scratch) as work:
        reading = Progress(f"reading {source.name}", 0, 0)

        def plan() -> Plan:
            with open_files(source, Path(work)) as files:
                return plan_import(files, ref, Path(work), reading.item_done)

        content = await asyncio.to_thread(plan)
        total = await asyncio.to_thread(lambda: content.total_bytes)
        writing = Progress(f"writing {name}:{tag}", total, len(content.blobs))

        def blob_done(digest: Digest) -> None:
            writing.advance(content.blobs[digest].stat().st_size)
            writing.item_done(str(digest))

        await write_image(store, name, tag, content, on_blob=blob_done)
        writing.finish()
        return content.top
