"""The aiohttp application: components opened and closed in order, and the routes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..cache.blobs import BlobCache
from ..cache.fill import RetryPolicy
from ..cache.links import LinkCache
from ..cache.manifests import ManifestCache
from ..config import Settings, StoreSettings
from ..health import Readiness
from ..metrics import Metrics
from ..storage.backend import Backend
from ..storage.distribution import DistributionStore
from ..storage.filesystem import FilesystemBackend
from ..storage.layout import BucketLayout
from ..storage.local import LocalStore
from ..storage.s3 import S3Backend
from . import blobs, manifests, middleware
from .ops import add_ops_routes
from .state import BLOBS, MAIN_APP, MANIFESTS, METRICS, READINESS

__all__ = ["build_app", "build_ops_app", "open_store"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_store(
    settings: StoreSettings, metrics: Metrics | None = None
) -> AsyncIterator[DistributionStore]:
    """The configured backing store, open for the duration of the block."""
    layout = BucketLayout(settings.prefix)
    if settings.s3 is not None:
        async with S3Backend.connect(settings.s3, metrics) as s3:
            yield DistributionStore(s3, layout)
    else:
        backend: Backend = FilesystemBackend(settings.fs_root)
        yield DistributionStore(backend, layout)


def _components(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def components(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]
        async with open_store(settings.store, metrics) as store:
            local = await LocalStore.open(settings.cache.directory)
            metrics.track_disk(lambda: float(local.bytes_used), local.layout.root)
            links = LinkCache(store, local, negative_ttl=settings.cache.tag_ttl)
            retry = RetryPolicy(attempts=settings.cache.fill_attempts)
            app[BLOBS] = BlobCache(store, local, links, retry, metrics)
            app[MANIFESTS] = ManifestCache(store, local, links, settings.cache.tag_ttl, metrics)
            app[READINESS] = Readiness(
                local, store.backend, metrics, settings.server.ready_interval
            )
            log.info("serving %s, cache in %s", store.backend.description, local.layout.root)
            try:
                yield
            finally:
                await app[BLOBS].close()
                await app[MANIFESTS].close()
                await links.close()

    return components


async def _base(request: web.Request) -> web.Response:
    return web.json_response({})


async def _unsupported(request: web.Request) -> web.Response:
    raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])


def build_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[middleware.observe, middleware.errors])
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_components(settings))
    app.on_response_prepare.append(middleware.add_api_headers)
    name = "{name:[^{}]+?}"
    r = app.router
    r.add_get("/v2/", _base, name="base")
    r.add_get(f"/v2/{name}/manifests/{{reference}}", manifests.get_manifest, name="manifest")
    r.add_get(f"/v2/{name}/tags/list", manifests.list_tags, name="tags")
    r.add_route("*", f"/v2/{name}/blobs/uploads/{{tail:.*}}", _unsupported, name="upload")
    r.add_get(f"/v2/{name}/blobs/{{digest}}", blobs.get_blob, name="blob", allow_head=False)
    r.add_route("HEAD", f"/v2/{name}/blobs/{{digest}}", blobs.head_blob, name="blob_head")
    add_ops_routes(app)
    return app


def build_ops_app(main: web.Application) -> web.Application:
    """The app of the separate --metrics-listen listener."""
    app = web.Application(middlewares=[middleware.errors])
    app[MAIN_APP] = main
    add_ops_routes(app)
    return app
