"""Asking the server on this host (as `serve` would listen) for one of its pages."""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from ..config import Settings

__all__ = ["ask_local"]


def ask_local(settings: Settings, path: str) -> tuple[str, int, bytes] | None:
    """GET `path` of the server these settings describe, over TLS when it
    serves TLS: (url, status, body), or None (said on stderr) when nothing
    answers or another program does."""
    server = settings.server
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(server.host, server.host)
    host = f"[{host}]" if ":" in host else host
    tls = server.tls_cert is not None
    # Our own process on this host: the point is whether it answers, so the
    # certificate (often issued for another name) is not checked here.
    context = ssl._create_unverified_context() if tls else None
    scheme = "https" if tls else "http"
    url = f"{scheme}://{host}:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"registry-local: {url}: {reason}", file=sys.stderr)
        return None
    if headers.get("Docker-Distribution-API-Version") != "registry/2.0":
        print(f"registry-local: {url}: something else answers there", file=sys.stderr)
        return None
    return url, status, body
