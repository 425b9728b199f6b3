"""Send a request exactly as written (no client normalises the path)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from yarl import URL

__all__ = ["raw_request"]


async def raw_request(
    base: str, target: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    url = URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {url.host}:{url.port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    document = (
        json.loads(body)
        if parsed.get("Content-Type", "").startswith("application/json") and body
        else body
    )
    return int(status_line.split()[1]), parsed, document
