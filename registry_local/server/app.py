"""The aiohttp application: components opened and closed in order, and the routes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..access.decisions import Decisions
from ..access.gate import Gate
from ..access.identity import Authenticator
from ..access.policy_file import PolicyFile
from ..cache.health import Readiness, store_fault
from ..cache.prefetch import Prefetcher
from ..cache.push import open_pusher
from ..cache.warm import Warmer
from ..cache.wiring import Cache, open_cache
from ..config import Settings
from ..errors import BackendError, BackendMisconfigured, StartError, Unsupported
from ..origin.scope import RegistryScope
from ..telemetry.metrics import AccessRecorder, Metrics
from . import middleware
from .access import TOKEN_PATH, access_middleware, issue_token
from .handlers import blobs, manifests, referrers, uploads, warm
from .handlers.ops import add_ops_routes
from .inflight import InFlight
from .scope import scope_middleware
from .state import (
    BLOBS,
    CATALOG,
    FLEET,
    GATE,
    INFLIGHT,
    MAIN_APP,
    MANIFESTS,
    METRICS,
    ORIGINS,
    PREFETCHER,
    PUSHER,
    READINESS,
    REFERRERS,
    WARMER,
)

__all__ = ["build_app", "build_ops_app"]

log = logging.getLogger(__name__)


def _fs_root_present(settings: Settings) -> None:
    """A directory store that is not there is a typo, unless pushes may fill it."""
    root = settings.store.fs_root
    if settings.store.s3 is None and not root.exists() and not settings.push.allow_push:
        raise StartError(
            f"--fs-root {root} does not exist: give the directory images were "
            "imported into (registry-local import), or --allow-push to start an empty one"
        )


async def _probe_store(cache: Cache) -> None:
    """At start: refuse a backing store that refuses us; start not ready (the
    reason in /readyz and the log) when it cannot be reached for now."""
    backend = cache.store.backend
    try:
        await backend.check()
    except BackendMisconfigured as exc:
        raise StartError(f"cannot use {backend.description}: {exc.reason}") from None
    except BackendError as exc:
        log.warning(
            "starting not ready: %s (%s)",
            store_fault(exc),
            backend.description,
            extra={"error": exc.reason, "error_class": type(exc).__name__},
        )


def _components(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def components(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]
        _fs_root_present(settings)
        async with open_cache(
            settings.cache, settings.store, metrics, settings.fleet, settings.confined
        ) as cache:
            await _probe_store(cache)
            app[BLOBS] = cache.blobs
            app[MANIFESTS] = cache.manifests
            app[REFERRERS] = cache.referrers
            app[CATALOG] = cache.catalog
            app[ORIGINS] = cache.origins
            if cache.coordination is not None:
                app[FLEET] = cache.coordination
            app[READINESS] = Readiness(
                cache.disk,
                cache.store.backend,
                metrics.readiness,
                settings.server.ready_interval,
                cache.fleet,
            )
            if settings.server.warm_endpoint:
                app[WARMER] = Warmer(cache.manifests, cache.blobs, settings.warm.concurrency)
            if settings.server.prefetch:
                prefetcher = Prefetcher(
                    cache.blobs, settings.server.prefetch_concurrency, metrics.prefetch
                ).start()
                cache.evictor.on_evict = prefetcher.evicted
                app[PREFETCHER] = prefetcher
            async with contextlib.AsyncExitStack() as stack:
                if settings.push.allow_push:
                    app[PUSHER] = await stack.enter_async_context(open_pusher(cache, settings.push))
                log.info(
                    "serving %s, cache in %s",
                    cache.store.backend.description,
                    cache.disk.layout.root,
                )
                try:
                    yield
                finally:
                    if PREFETCHER in app:
                        await app[PREFETCHER].close()

    return components


async def _base(request: web.Request) -> web.Response:
    return web.json_response({})


async def _unsupported(request: web.Request) -> web.Response:
    raise Unsupported("pushing is not enabled on this registry (--allow-push)")


def _gate(settings: Settings, metrics: AccessRecorder) -> Gate:
    """Who may do what; raises ConfigError for unusable auth or policy files."""
    server, access = settings.server, settings.access
    authenticator = Authenticator.load(server.auth_htpasswd, server.auth_token_file)
    policy = None if access.policy is None else PolicyFile.load(access.policy, metrics)
    decisions = None
    if settings.store.origins_decide:
        decisions = Decisions.create(
            access.decision_ttl, access.offline_grace, access.max_decisions
        )
    return Gate.create(authenticator, policy, decisions, metrics)


async def _gate_running(app: web.Application) -> AsyncIterator[None]:
    gate = app[GATE]
    if gate.policy is not None:
        gate.policy.start()
    try:
        yield
    finally:
        if gate.policy is not None:
            await gate.policy.close()
        if gate.decisions is not None:
            await gate.decisions.close()


def build_app(settings: Settings) -> web.Application:
    """The application; raises ConfigError for unusable auth or policy files."""
    middlewares: list[Middleware] = [middleware.observe, middleware.errors]
    metrics = Metrics()
    gate = _gate(settings, metrics.access)
    if not gate.open:
        middlewares.append(access_middleware(gate))
    scope = RegistryScope.of(settings.store)
    if not scope.everything:
        middlewares.append(scope_middleware(scope))
    app = web.Application(middlewares=middlewares)
    app[METRICS] = metrics
    if not gate.open:
        app[GATE] = gate
        app.cleanup_ctx.append(_gate_running)
    app[INFLIGHT] = InFlight()
    app[METRICS].requests.track_server(lambda: app[INFLIGHT].count)
    app.cleanup_ctx.append(_components(settings))
    app.on_response_prepare.append(middleware.add_api_headers)
    name = "{name:[^{}]+?}"
    r = app.router
    r.add_get("/v2/", _base, name="base")
    r.add_get("/v2/_catalog", manifests.catalog, name="catalog")
    r.add_get(f"/v2/{name}/manifests/{{reference}}", manifests.get_manifest, name="manifest")
    r.add_get(f"/v2/{name}/tags/list", manifests.list_tags, name="tags")
    r.add_get(f"/v2/{name}/referrers/{{digest}}", referrers.get_referrers, name="referrers")
    r.add_get(f"/v2/{name}/blobs/{{digest}}", blobs.get_blob, name="blob", allow_head=False)
    r.add_route("HEAD", f"/v2/{name}/blobs/{{digest}}", blobs.head_blob, name="blob_head")
    manifest_path = f"/v2/{name}/manifests/{{reference}}"
    uploads_path = f"/v2/{name}/blobs/uploads/"
    if settings.push.allow_push:
        r.add_post(uploads_path, uploads.start_upload, name="upload")
        session = r.add_resource(uploads_path + "{upload}", name="upload_session")
        session.add_route("PATCH", uploads.patch_upload)
        session.add_route("PUT", uploads.finish_upload)
        session.add_route("GET", uploads.upload_status)
        session.add_route("DELETE", uploads.cancel_upload)
        r.add_put(manifest_path, manifests.put_manifest, name="manifest_put")
    else:
        r.add_route("*", uploads_path + "{tail:.*}", _unsupported, name="upload")
    if settings.push.allow_push and settings.push.allow_delete:
        r.add_delete(manifest_path, manifests.delete_manifest, name="manifest_delete")
        r.add_delete(f"/v2/{name}/blobs/{{digest}}", blobs.delete_blob, name="blob_delete")
    if settings.server.warm_endpoint:
        r.add_post("/-/warm", warm.warm, name="warm")
    if gate.confines:
        token = r.add_resource(TOKEN_PATH, name="token")
        token.add_route("GET", issue_token)
        token.add_route("POST", issue_token)
    add_ops_routes(app)
    return app


def build_ops_app(main: web.Application) -> web.Application:
    """The app of the separate --metrics-listen listener."""
    app = web.Application(middlewares=[middleware.errors])
    app[MAIN_APP] = main
    add_ops_routes(app)
    return app
