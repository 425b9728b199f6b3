"""What handlers find on the Application, under typed keys."""

from __future__ import annotations

from aiohttp import web

from ..access.gate import Gate
from ..access.identity import Identity
from ..cache.blobs import BlobCache
from ..cache.catalog import Catalog
from ..cache.health import Readiness
from ..cache.manifests import ManifestCache
from ..cache.prefetch import Prefetcher
from ..cache.push import Pusher
from ..cache.referrers import Referrers
from ..cache.warm import Warmer
from ..fleet.coordination import Fleet
from ..origin.mapping import OriginMap
from ..telemetry.metrics import Metrics
from .inflight import InFlight

__all__ = [
    "BLOBS",
    "CATALOG",
    "FLEET",
    "GATE",
    "IDENTITY",
    "INFLIGHT",
    "MAIN_APP",
    "MANIFESTS",
    "METRICS",
    "ORIGINS",
    "PREFETCHER",
    "PUSHER",
    "READINESS",
    "REFERRERS",
    "WARMER",
]

METRICS = web.AppKey("metrics", Metrics)
BLOBS = web.AppKey("blobs", BlobCache)
MANIFESTS = web.AppKey("manifests", ManifestCache)
READINESS = web.AppKey("readiness", Readiness)
# On the separate metrics listener's app: the main app, whose state it reports.
MAIN_APP = web.AppKey("main_app", web.Application)
PUSHER = web.AppKey("pusher", Pusher)
WARMER = web.AppKey("warmer", Warmer)
PREFETCHER = web.AppKey("prefetcher", Prefetcher)
INFLIGHT = web.AppKey("in_flight", InFlight)
REFERRERS = web.AppKey("referrers", Referrers)
CATALOG = web.AppKey("catalog", Catalog)
FLEET = web.AppKey("fleet", Fleet)
ORIGINS = web.AppKey("origins", OriginMap)
# With access control: who decides, and (on each request) whom the request is from.
GATE = web.AppKey("gate", Gate)
IDENTITY = web.RequestKey("identity", Identity)
