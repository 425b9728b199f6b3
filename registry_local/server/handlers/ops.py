"""Operator endpoints: /metrics, /healthz, /readyz.

They answer on the main listener and, with --metrics-listen, on a listener of
their own, reporting the main application's state either way.
"""

from __future__ import annotations

from aiohttp import web

from ..state import MAIN_APP, METRICS, READINESS

__all__ = ["add_ops_routes"]


def _main(request: web.Request) -> web.Application:
    return request.app.get(MAIN_APP) or request.app


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=_main(request)[METRICS].exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the cache dir takes writes and the backing store answers."""
    report = await _main(request)[READINESS].report()
    return web.json_response(
        {
            "status": "ready" if report.ready else "unavailable",
            "checks": {"disk": report.disk, "store": report.store, "fleet": report.fleet},
        },
        status=200 if report.ready else 503,
    )


def add_ops_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
