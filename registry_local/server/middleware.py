"""Cross-cutting request handling: the OCI error envelope, API headers, metrics.

This is the one place where errors become responses: a RegistryError (or a
domain error that maps onto one, errors.as_registry_error) becomes the OCI JSON
envelope with its status; aiohttp's own routing errors become UNSUPPORTED; any
other exception is a bug, logged here with its traceback and answered 500
UNKNOWN without one.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import RegistryError, Unsupported, as_registry_error, envelope
from ..telemetry.logs import error_fields
from ..telemetry.metrics import Route
from ..telemetry.requestlog import (
    RequestTrace,
    current,
    note_cut,
    note_status,
    request_id,
    traced,
)
from .state import INFLIGHT, METRICS, ORIGINS

__all__ = [
    "API_VERSION_HEADERS",
    "ROUTE_LABELS",
    "error_response",
    "errors",
    "observe",
]

log = logging.getLogger(__name__)
access_log = logging.getLogger("registry_local.access")

API_VERSION_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
CLIENT_CLOSED = 499


def error_response(error: RegistryError) -> web.Response:
    return web.Response(
        status=error.status,
        body=envelope(error),
        headers={"Content-Type": "application/json", **error.headers},
    )


def _routing_error(exc: web.HTTPException) -> RegistryError:
    if exc.status == 405:
        allow = exc.headers.get("Allow")
        return Unsupported("method not allowed here", headers={"Allow": allow} if allow else None)
    if exc.status == 404:
        return Unsupported("no such API endpoint", status=404)
    return RegistryError(exc.reason, status=exc.status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_routing_error(exc))
    except ConnectionError:
        # The client went away (mid-body, usually): nobody to answer. 499 is
        # nginx's "client closed request", for the access log and the metrics.
        log.debug("client went away during %s %s", request.method, request.path)
        return web.Response(status=CLIENT_CLOSED)
    except Exception as exc:
        error = as_registry_error(exc)
        if error is None:
            # A bug: one error line with its cause; the traceback at debug level.
            log.error(
                "unexpected error answering %s %s: %s: %s",
                request.method,
                request.path,
                type(exc).__name__,
                exc,
                extra=error_fields(exc),
            )
            log.debug("traceback of the unexpected error", exc_info=True)
            error = RegistryError("internal error")
        elif error.status >= 500:
            log.warning(
                "%s %s: %s (%s)",
                request.method,
                request.path,
                error.message,
                exc,
                extra={
                    "repository": request.match_info.get("name"),
                    "digest": request.match_info.get("digest"),
                    "reference": request.match_info.get("reference"),
                    **error_fields(exc),
                },
            )
        return error_response(error)


_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"})
ROUTE_LABELS: dict[str, Route] = {
    "base": "base",
    "manifest": "manifest",
    "blob": "blob",
    "blob_head": "blob",
    "tags": "tags",
    "referrers": "referrers",
    "catalog": "catalog",
    "upload": "upload",
    "upload_session": "upload",
    "manifest_put": "manifest",
    "manifest_delete": "manifest",
    "blob_delete": "blob",
    "metrics": "metrics",
    "healthz": "health",
    "warm": "warm",
    "token": "token",
    "readyz": "ready",
}


def _body_bytes(request: web.Request, response: web.StreamResponse | None) -> int:
    if request.method == "HEAD" or not isinstance(response, web.Response):
        return 0
    return len(response.body) if isinstance(response.body, bytes) else 0


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, time and log every request: one access-log line each.

    A plain Response is sent here rather than after the middleware returns, so
    the duration and byte counts cover the whole answer. A body that ended short
    (a fill failed, the server shut down, the client left) is logged with its
    `cut` reason, at WARNING unless the client left, never as a plain 200.
    """
    began = time.monotonic()
    response: web.StreamResponse | None = None
    in_flight = request.app[INFLIGHT]
    in_flight.enter()
    with traced(request_id(request.headers.get("X-Request-Id"))) as trace:
        try:
            response = await handler(request)
            if not response.prepared:
                try:
                    await response.prepare(request)
                    await response.write_eof()
                except ConnectionError:
                    response = web.Response(status=CLIENT_CLOSED)
            return response
        except asyncio.CancelledError:
            # Shutdown cancels what did not finish in --shutdown-timeout; aiohttp
            # cancels a handler whose client went away.
            note_cut("shutting down" if in_flight.draining else "client went away")
            raise
        finally:
            in_flight.leave()
            _log_request(request, response, trace, time.monotonic() - began)


def _log_request(
    request: web.Request,
    response: web.StreamResponse | None,
    trace: RequestTrace,
    duration: float,
) -> None:
    if trace.status is not None:
        status = trace.status  # what the client was sent, whatever happened next
    elif response is not None:
        status = response.status
    else:
        status = CLIENT_CLOSED if trace.cut == "client went away" else 500
    sent = trace.sent_bytes + _body_bytes(request, response)
    route = ROUTE_LABELS.get(request.match_info.route.name or "", "other")
    method = request.method if request.method in _METHODS else "other"
    request.app[METRICS].requests.answered(route, method, status, duration, sent)
    level = logging.INFO
    if trace.cut is not None and trace.cut != "client went away":
        level = logging.WARNING
    if not access_log.isEnabledFor(level):
        return
    text = f"{request.method} {request.path} {status}"
    access_log.log(
        level,
        f"{text} cut short: {trace.cut}" if trace.cut is not None else text,
        extra={
            "event": "request",
            "request_id": trace.request_id,
            "method": request.method,
            "path": request.path_qs,
            "status": status,
            "bytes": sent,
            "cut": trace.cut,
            "duration": round(duration, 6),
            "cache": trace.cache_outcome,
            "remote": request.remote,
            "user_agent": request.headers.get("User-Agent"),
        },
    )


async def add_api_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer names the API version, as distribution's
    do, and its request id; the trace notes the status the client is sent. An
    answer for a repository whose origin `?ns=` picked echoes it in
    `OCI-Namespace` (the spec's Registry Proxying section), errors too."""
    response.headers.update(API_VERSION_HEADERS)
    namespace, name = request.query.get("ns"), request.match_info.get("name")
    origins = request.app.get(ORIGINS)
    if namespace and name and origins and origins.chosen_by_namespace(name, namespace):
        response.headers["OCI-Namespace"] = namespace
    trace = current()
    if trace is not None:
        response.headers["X-Request-Id"] = trace.request_id
    note_status(response.status)
