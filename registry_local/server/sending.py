"""Sending a blob's body: file stretches by sendfile, chunks by plain writes.

The cache hands over one BlobBody (fill/body.py) whatever is behind it; this
module only moves its pieces to the socket in order. A file stretch first goes
to `os.sendfile` directly, as much as the socket takes at once: readers
following a fill send many short stretches, and each `loop.sendfile` costs
about ten system calls (pausing reads, registering for writability) before it
sends a byte. What the socket does not take at once goes through
`loop.sendfile`, which waits for room (and falls back to read/write where
sendfile cannot run, e.g. under TLS). If the body fails part-way, the
connection is closed without the missing bytes, so the client sees a short body
and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from typing import BinaryIO

from aiohttp import web

from ..errors import BackendError, FillFailed, TooManyRanges
from ..fill.body import BlobBody
from ..oci.byterange import ByteRange, parse_ranges
from ..oci.digest import Digest
from ..telemetry.logs import error_fields
from ..telemetry.metrics import RangeShape
from ..telemetry.requestlog import note_cut

__all__ = ["Count", "answer_blob", "blob_headers", "send_blob"]

# Records body bytes sent: how many, and whether they went around aiohttp's
# writer (sendfile), so the request's trace must count them itself.
Count = Callable[[int, bool], None]

log = logging.getLogger(__name__)


def blob_headers(digest: Digest) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }


async def answer_blob(
    request: web.Request,
    digest: Digest,
    body: BlobBody,
    count: Count,
    on_ranges: Callable[[RangeShape], None] = lambda _: None,
) -> web.StreamResponse:
    """The whole answer to a GET of a blob: status, headers, the requested
    ranges of `body` (closed when done). One range is a 206 with Content-Range;
    several, a 206 multipart/byteranges (RFC 9110 section 14.6); `on_ranges`
    hears which it was."""
    try:
        wanted = parse_ranges(request.headers.get("Range"))
        whole = ByteRange(0, body.size, body.size)
        ranges = [whole]
        if wanted is not None:
            try:
                ranges = wanted.resolve(body.size)
            except TooManyRanges:
                on_ranges("too_many")
                raise
            on_ranges("one" if len(ranges) == 1 else "many")
        fitted = [body.fit(r) for r in ranges]
        if fitted != ranges:  # some cannot be sent as asked: the whole blob instead
            fitted = [whole]
        if len(fitted) > 1:
            return await _answer_parts(request, digest, body, fitted, count)
        byte_range = fitted[0]
        headers = blob_headers(digest)
        if byte_range.partial:
            headers["Content-Range"] = byte_range.content_range()
        status = 206 if byte_range.partial else 200
        if body.whole is not None:
            # Whole in memory: one write for the headers and the body together.
            count(byte_range.length, False)
            return web.Response(
                status=status, body=body.whole[byte_range.start : byte_range.end], headers=headers
            )
        if byte_range.partial:
            body.want(fitted)
        stream = web.StreamResponse(status=status, headers=headers)
        stream.content_length = byte_range.length
        await stream.prepare(request)
        if await send_blob(request, stream, body, byte_range, count):
            await stream.write_eof()
        return stream
    finally:
        body.close()


async def _answer_parts(
    request: web.Request, digest: Digest, body: BlobBody, ranges: list[ByteRange], count: Count
) -> web.StreamResponse:
    """206 multipart/byteranges: each range after its own part headers."""
    boundary = secrets.token_hex(16)
    heads = [
        (
            ("\r\n" if index else "")
            + f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Range: {r.content_range()}\r\n\r\n"
        ).encode()
        for index, r in enumerate(ranges)
    ]
    tail = f"\r\n--{boundary}--\r\n".encode()
    headers = blob_headers(digest)
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    stream = web.StreamResponse(status=206, headers=headers)
    stream.content_length = sum(map(len, heads)) + sum(r.length for r in ranges) + len(tail)
    body.want(ranges)  # every range is fetched at once, sent in turn
    await stream.prepare(request)
    for head, byte_range in zip(heads, ranges, strict=True):
        await stream.write(head)
        if not await send_blob(request, stream, body, byte_range, count):
            return stream
    await stream.write(tail)
    await stream.write_eof()
    return stream


async def send_blob(
    request: web.Request,
    response: web.StreamResponse,
    body: BlobBody,
    byte_range: ByteRange,
    count: Count,
) -> bool:
    """Send the range after the headers; False if the body had to be cut short."""
    loop = asyncio.get_running_loop()
    transport = request.transport
    position = byte_range.start
    try:
        async with contextlib.aclosing(body.pieces(byte_range.start, byte_range.end)) as pieces:
            async for piece in pieces:
                if isinstance(piece, bytes):
                    await response.write(piece)
                    position += len(piece)
                    continue
                # The client may have gone while we waited for bytes: check just
                # before sending, as asyncio refuses (RuntimeError) a closing transport.
                if transport is None or transport.is_closing():
                    note_cut("client went away")
                    return False
                end = piece.offset + piece.count
                position += _send_now(transport, piece.file, position, end - position)
                if position < end:
                    position += await loop.sendfile(transport, piece.file, position, end - position)
        return position == byte_range.end
    except (FillFailed, BackendError) as exc:
        log.warning(
            "cutting %s short at byte %d: %s",
            request.path,
            position,
            exc,
            extra={
                "digest": request.match_info.get("digest"),
                "repository": request.match_info.get("name"),
                "at_byte": position,
                **error_fields(exc),
            },
        )
        note_cut(f"{type(exc).__name__}: {exc}")
        if transport is not None:
            transport.close()
        return False
    except ConnectionError:
        note_cut("client went away")
        return False
    finally:
        count(position - byte_range.start, True)


def _send_now(transport: asyncio.BaseTransport, file: BinaryIO, offset: int, count: int) -> int:
    """Bytes of the file the socket takes at once, without waiting; 0 where the
    transport has bytes of its own queued (they go first) or is not a plain socket."""
    sock = transport.get_extra_info("socket")
    if (
        sock is None
        or transport.get_extra_info("ssl_object") is not None
        or not isinstance(transport, asyncio.WriteTransport)
        or transport.get_write_buffer_size()
    ):
        return 0
    try:
        return os.sendfile(sock.fileno(), file.fileno(), offset, count)
    except (BlockingIOError, InterruptedError):
        return 0
