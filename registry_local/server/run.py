"""Running the server: listeners, signals, and an orderly shutdown.

On SIGTERM or SIGINT the listeners stop accepting, requests in progress get up
to --shutdown-timeout seconds to finish, then those left are cancelled (their
access-log lines say `cut short: shutting down`) and the application closes:
running fills are cancelled and their temp files removed, so the cache dir holds
only committed blobs. The whole takes --shutdown-timeout plus a few seconds at
most, whatever the backing store is doing.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path

from aiohttp import web

from ..config import FleetSettings, Settings, is_loopback
from ..errors import ConfigError, StartError
from .app import build_app, build_ops_app
from .peer import build_peer_app
from .state import INFLIGHT

__all__ = ["peer_tls_context", "serve", "tls_context"]

log = logging.getLogger("registry_local")

# After --shutdown-timeout: how long cancelled requests get to end, and how long
# aiohttp then waits for each connection it closes (nothing runs on them by then).
_CANCEL_WAIT = 2.0
_CLOSE_WAIT = 1.0


async def _start(
    app: web.Application, host: str, port: int, tls: ssl.SSLContext | None = None
) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_CLOSE_WAIT)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = exc.strerror or str(exc)
        if "address already in use" in str(exc):
            reason = "the address is in use (another process listens there)"
        raise StartError(f"cannot listen on {_address(host, port)}: {reason}") from None
    return runner


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The engines' listener's TLS, if configured; raises ConfigError."""
    return _tls(settings.server.tls_cert, settings.server.tls_key, "--tls-cert", "--tls-key")


def peer_tls_context(fleet: FleetSettings) -> ssl.SSLContext | None:
    """The peer listener's TLS, if configured; raises ConfigError."""
    return _tls(fleet.tls_cert, fleet.tls_key, "--peer-tls-cert", "--peer-tls-key")


def _tls(
    cert: Path | None, key: Path | None, cert_flag: str, key_flag: str
) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use {cert_flag} {cert} / {key_flag} {key}: {exc}") from None
    return context


async def serve(settings: Settings) -> None:
    server = settings.server
    tls = tls_context(settings)
    peer_tls = None if settings.fleet is None else peer_tls_context(settings.fleet)
    app = build_app(settings)
    # Every listener is up before the first says so: "listening on" means ready.
    listeners: list[tuple[web.Application, str, int, ssl.SSLContext | None, str]] = [
        (app, server.host, server.port, tls, "listening on %s://%s")
    ]
    if server.metrics_listen is not None:
        host, port = server.metrics_listen
        listeners.append((build_ops_app(app), host, port, None, "metrics on %s://%s/metrics"))
    if settings.fleet is not None:
        fleet = settings.fleet
        peers = build_peer_app(app, fleet.token, fleet.max_streams)
        listeners.append(
            (peers, fleet.peer_host, fleet.peer_port, peer_tls, "peer listener on %s://%s")
        )
    runners: list[web.AppRunner] = []
    try:
        for listener, host, port, context, _ in listeners:
            runners.append(await _start(listener, host, port, context))
    except StartError:
        for runner in reversed(runners):
            await runner.cleanup()
        raise
    for _, host, port, context, message in listeners:
        log.info(message, "https" if context else "http", _address(host, port))
    if (
        not is_loopback(server.host)
        and server.auth_htpasswd is None
        and server.auth_token_file is None
    ):
        log.warning(
            "serving pulls without authentication on %s: whoever can reach it can "
            "read every image in the backing store",
            server.host,
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        for runner in runners:
            for site in list(runner.sites):
                await site.stop()
        log.info(
            "shutting down: no new connections; finishing requests for up to %ss",
            server.shutdown_timeout,
        )
        cut = await app[INFLIGHT].drain(server.shutdown_timeout, _CANCEL_WAIT)
        if cut:
            log.warning("shutting down: cut %d request(s) that did not finish in time", cut)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        log.info("stopped")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
