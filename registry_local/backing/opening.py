"""Opening the configured backing store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..config import StoreSettings
from ..layout import BucketLayout
from ..telemetry.metrics import S3Recorder
from .distribution import DistributionStore
from .filesystem import FilesystemBackend
from .s3 import S3Backend

__all__ = ["open_store"]


@contextlib.asynccontextmanager
async def open_store(
    settings: StoreSettings, metrics: S3Recorder | None = None
) -> AsyncIterator[DistributionStore]:
    """The configured backing store, open for the duration of the block."""
    layout = BucketLayout(settings.prefix)
    if settings.s3 is not None:
        async with S3Backend.connect(
            settings.s3, metrics, layout.probes(), settings.max_concurrency
        ) as s3:
            yield DistributionStore(s3, layout)
    else:
        yield DistributionStore(FilesystemBackend(settings.fs_root), layout)
