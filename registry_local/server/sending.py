"""Sending blob bytes: sendfile from a committed file, or following a fill.

Both cases are one loop: wait until bytes past the current position may be
sent, then hand that stretch of the file to the kernel. A committed blob is one
stretch. A stretch first goes to `os.sendfile` directly, as much as the socket
takes at once: readers following a fill send many short stretches, and each
`loop.sendfile` costs about ten system calls (pausing reads, registering for
writability) before it sends a byte. What the socket does not take at once goes
through `loop.sendfile`, which waits for room (and falls back to read/write
where sendfile cannot run, e.g. under TLS). If the fill fails part-way, the
connection is closed without the missing bytes, so the client sees a short body
and retries. When the cache has no room, chunks come from the backing store (a
DirectBlob).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import BinaryIO

from aiohttp import web

from ..cache.blobs import BlobReader
from ..cache.direct import DirectBlob
from ..cache.fill import NoRoom
from ..errors import BackendError, FillFailed
from ..oci.byterange import ByteRange
from ..telemetry.metrics import Metrics
from ..telemetry.requestlog import note_sent

__all__ = ["send_blob"]

log = logging.getLogger(__name__)


async def send_blob(
    request: web.Request,
    response: web.StreamResponse,
    reader: BlobReader | DirectBlob,
    byte_range: ByteRange,
    metrics: Metrics,
) -> bool:
    """Send the range after the headers; False if the body had to be cut short."""
    loop = asyncio.get_running_loop()
    transport = request.transport
    position = byte_range.start
    try:
        if isinstance(reader, DirectBlob):  # no room in the cache: from the backing store
            async for chunk in reader.chunks(byte_range.start, byte_range.end):
                await response.write(chunk)
                position += len(chunk)
            return position == byte_range.end
        if reader.fill is not None and byte_range.end < reader.size:
            # A range short of the end gets no held-back byte to protect it: wait
            # until the fill has verified and committed the blob.
            await reader.fill.committed()
        while position < byte_range.end:
            try:
                readable = min(await reader.readable_beyond(position), byte_range.end)
            except NoRoom:
                # The fill ran out of disk: go on from the backing store where we are.
                assert reader.fill is not None
                direct = reader.fill.direct()
                verify = byte_range.end == direct.size
                async for chunk in direct.chunks(position, byte_range.end, verify):
                    await response.write(chunk)
                    position += len(chunk)
                break
            # The client may have gone while we waited for bytes: check just before
            # sending, as asyncio refuses (RuntimeError) a transport that is closing.
            if transport is None or transport.is_closing():
                return False
            position += _send_now(transport, reader.file, position, readable - position)
            if position < readable:
                position += await loop.sendfile(
                    transport, reader.file, position, readable - position
                )
        return position == byte_range.end
    except (FillFailed, BackendError) as exc:
        log.warning("cutting %s short at byte %d: %s", request.path, position, exc)
        if transport is not None:
            transport.close()
        return False
    except ConnectionError:
        return False  # the client went away
    finally:
        source = (
            "s3" if isinstance(reader, DirectBlob) else "disk" if reader.fill is None else "fill"
        )
        metrics.blob_bytes_served.labels(source).inc(position - byte_range.start)
        note_sent(position - byte_range.start)


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
