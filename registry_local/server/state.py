"""What handlers find on the Application, under typed keys."""

from __future__ import annotations

from aiohttp import web

from ..cache.blobs import BlobCache
from ..cache.manifests import ManifestCache
from ..metrics import Metrics

__all__ = ["BLOBS", "MANIFESTS", "METRICS"]

METRICS = web.AppKey("metrics", Metrics)
BLOBS = web.AppKey("blobs", BlobCache)
MANIFESTS = web.AppKey("manifests", ManifestCache)
