"""A reverse proxy in front of a real S3 server: counts, gates and breaks requests.

Tests put it between registry-local and moto to count requests at the S3
boundary (not in our own code), to hold a response body at a byte offset until
the test releases it (so "joiners get bytes while the fill runs" needs no
timing), and to inject faults: error statuses, resets mid-body, stalls, short
bodies, corrupted bytes, slow bandwidth.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from registry_local.layout import BucketLayout

__all__ = ["Fault", "Recorded", "Rotation", "S3Proxy"]

_CHUNK = 128 * 1024  # small enough for the shaping to be smooth, large enough to be fast
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}


@dataclass
class Recorded:
    """One request the proxy relayed to S3: method, key, range, query and the status."""

    method: str
    key: str  # "bucket/key..." as in the path-style URL
    range: str | None
    query: str = ""  # as sent (a presigned URL's signature is there)
    status: int | None = None  # the store's answer; None if it gave none (client gone)

    @property
    def span(self) -> tuple[int, int | None]:
        """The byte range asked for, [start, end): (0, None) for the whole object."""
        if self.range is None:
            return 0, None
        first, _, last = self.range.removeprefix("bytes=").partition("-")
        return int(first), int(last) + 1 if last else None


@dataclass
class Fault:
    """What to do to matching requests; `times` limits how many (None: all).

    status:      answer with this status, an S3 error code and message, upstream untouched
    headers:     with `status`, these headers on the answer too
    refuse:      close the connection without an answer
    gate_at:     send this many body bytes, then wait for `gate` to be set
    reset_at:    send this many body bytes, then reset the connection
    stall_at:    send this many body bytes, then send nothing more
    truncate_at: send this many body bytes, then end the response cleanly
    corrupt_at:  flip the byte at this offset of the body
    rate:        bytes per second for the body (a per-stream cap)
    delay:       seconds before the request goes upstream (latency)
    starting_at: apply only to requests for a byte range starting at this offset
    drop_range:  forward the request without its Range header, as if the
                 upstream ignored it (it answers 200 with the whole body)
    drop_conditions: forward the request without If-None-Match and If-Match, as
                 a store without conditional writes would ignore them
    """

    match: Callable[[str, str], bool]
    times: int | None = None
    starting_at: int | None = None  # only requests whose byte range starts here
    status: int | None = None
    code: str = "SlowDown"
    message: str = "injected"
    headers: dict[str, str] = field(default_factory=dict)
    refuse: bool = False
    gate_at: int | None = None
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)  # set when a gate/stall hits
    reset_at: int | None = None
    stall_at: int | None = None
    truncate_at: int | None = None
    corrupt_at: int | None = None
    rate: float | None = None
    delay: float = 0.0
    drop_range: bool = False
    drop_conditions: bool = False
    applied: int = 0


@dataclass
class Rotation:
    """Faults taken in turn, per key: the n-th matching request for a key gets
    `cycle[(start + n) % len(cycle)]` (None: passes untouched), where `start` is
    drawn from the key's name (a stable hash, when `spread`; else 0), so keys do
    not all begin at the same place of the cycle. Each Fault of the cycle counts
    what it was applied to; its own `match`, `times` and `starting_at` are not read."""

    match: Callable[[str, str], bool]
    cycle: Sequence[Fault | None]
    spread: bool = True
    seen: Counter[str] = field(default_factory=Counter)

    def next(self, key: str) -> Fault | None:
        """What the next request for `key` gets."""
        start = zlib.crc32(key.encode()) if self.spread else 0
        fault = self.cycle[(start + self.seen[key]) % len(self.cycle)]
        self.seen[key] += 1
        if fault is not None:
            fault.applied += 1
        return fault


def key_endswith(suffix: str, method: str | None = "GET") -> Callable[[str, str], bool]:
    return lambda m, key: key.endswith(suffix) and (method is None or m == method)


class _Link:
    """A shared cap on the bytes per second of every body together."""

    # Time the link may lag its schedule and catch up: sleeps overshoot (the event
    # loop's timers are coarse), and without this credit every overshoot would be
    # lost, so the link would run well below its rate.
    BURST = 0.02

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._free_at = 0.0

    async def send(self, size: int) -> None:
        now = asyncio.get_running_loop().time()
        self._free_at = max(self._free_at, now - self.BURST) + size / self.rate
        if self._free_at > now:
            await asyncio.sleep(self._free_at - now)  # shaping, not waiting for work


async def serve_app(
    app: web.Application, port: int = 0, tls: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    """Serve an aiohttp app on 127.0.0.1 (a free port unless given), over TLS if
    given a context: runner and URL."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


class S3Proxy:
    """The proxy. Besides S3 paths it answers GET /__proxy/stats (counts as JSON)
    and POST /__proxy/reset, for benchmarks that run it as a process of its own."""

    def __init__(self, upstream: str, link_rate: float | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.rotations: list[Rotation] = []
        self.body_bytes = 0
        self.bytes_by_key: Counter[str] = Counter()  # body bytes sent, per object
        self.active = 0  # bodies being relayed now
        self.peak_active = 0
        self._completed = 0  # bodies relayed to their end
        self._changed = asyncio.Condition()
        self._link = _Link(link_rate) if link_rate else None
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> S3Proxy:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner, self.url = await serve_app(app, port, tls)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def close(self) -> None:
        for fault in self.faults:
            fault.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def rotate(self, rotation: Rotation) -> Rotation:
        """Apply `rotation` to the requests it matches, before any fault added."""
        self.rotations.append(rotation)
        return rotation

    def pull_requests(self) -> list[Recorded]:
        """The requests recorded, but the notes of use a host writes for gc in
        the background (registry-local/uses/): what serving itself asked of S3."""
        uses = "/" + BucketLayout().use_records()
        return [r for r in self.requests if uses not in r.key]

    def count(self, method: str, key_suffix: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.key.endswith(key_suffix))

    def blob_gets(self) -> dict[str, int]:
        """GetObject requests per blob data key."""
        counts: dict[str, int] = {}
        for r in self.requests:
            if r.method == "GET" and r.key.endswith("/data"):
                counts[r.key] = counts.get(r.key, 0) + 1
        return counts

    async def completed(self, count: int) -> None:
        """Wait until `count` response bodies have been relayed to their end."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._completed >= count)

    def _fault_for(self, recorded: Recorded) -> Fault | None:
        method, key = recorded.method, recorded.key
        for rotation in self.rotations:
            if rotation.match(method, key):
                return rotation.next(key)
        for fault in self.faults:
            if fault.starting_at is not None and fault.starting_at != recorded.span[0]:
                continue
            if fault.match(method, key) and (fault.times is None or fault.applied < fault.times):
                fault.applied += 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["path"]
        if key.startswith("__proxy/"):
            return self._control(request, key)
        recorded = Recorded(request.method, key, request.headers.get("Range"), request.query_string)
        self.requests.append(recorded)
        fault = self._fault_for(recorded)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)  # simulated latency
        if fault is not None and fault.refuse:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if fault is not None and fault.status is not None:
            body = f"<Error><Code>{fault.code}</Code><Message>{fault.message}</Message></Error>"
            headers = {"Retry-After": "0"} if fault.status == 429 else {}
            return web.Response(
                status=fault.status,
                text=body,
                content_type="application/xml",
                headers={**headers, **fault.headers},
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        if fault is not None and fault.drop_range:
            headers.pop("Range", None)
        if fault is not None and fault.drop_conditions:
            headers.pop("If-None-Match", None)
            headers.pop("If-Match", None)
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.path_qs,
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        ) as upstream:
            recorded.status = upstream.status
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_HEADERS:
                    response.headers[name] = value
            await response.prepare(request)
            if request.method != "HEAD":
                self.active += 1
                self.peak_active = max(self.peak_active, self.active)
                try:
                    await self._relay(request, upstream, response, fault)
                finally:
                    self.active -= 1
            return response

    def _control(self, request: web.Request, key: str) -> web.Response:
        if key == "__proxy/reset" and request.method == "POST":
            self.requests.clear()
            self.body_bytes = 0
            self.bytes_by_key.clear()
            return web.json_response({})
        gets = [r for r in self.requests if r.method == "GET"]
        return web.json_response(
            {
                "requests": len(self.requests),
                "gets": len(gets),
                "gets_by_key": dict(Counter(r.key for r in gets)),
                "body_bytes": self.body_bytes,
                "bytes_by_key": dict(self.bytes_by_key),
            }
        )

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        fault: Fault | None,
    ) -> None:
        sent = 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        async for chunk in upstream.content.iter_chunked(_CHUNK):
            if fault is not None:
                if fault.corrupt_at is not None and sent <= fault.corrupt_at < sent + len(chunk):
                    flipped = bytearray(chunk)
                    flipped[fault.corrupt_at - sent] ^= 0xFF
                    chunk = bytes(flipped)
                for limit in (fault.gate_at, fault.reset_at, fault.stall_at, fault.truncate_at):
                    if limit is not None and sent < limit < sent + len(chunk):
                        await self._send(request, response, bytes(chunk[: limit - sent]))
                        chunk, sent = chunk[limit - sent :], limit
                if sent == fault.gate_at and not fault.gate.is_set():
                    fault.reached.set()
                    await fault.gate.wait()
                if sent == fault.reset_at:
                    assert request.transport is not None
                    request.transport.abort()
                    return
                if sent == fault.stall_at:
                    fault.reached.set()
                    await asyncio.Event().wait()  # until the client gives up
                if sent == fault.truncate_at:
                    with contextlib.suppress(ConnectionError):
                        await response.write_eof()
                    assert request.transport is not None
                    request.transport.close()
                    return
                if fault.rate:
                    ahead = began + (sent + len(chunk)) / fault.rate - loop.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)  # bandwidth shaping, not waiting for work
            if self._link is not None:
                await self._link.send(len(chunk))
            await self._send(request, response, bytes(chunk))
            sent += len(chunk)
        await response.write_eof()
        async with self._changed:
            self._completed += 1
            self._changed.notify_all()

    async def _send(self, request: web.Request, response: web.StreamResponse, data: bytes) -> None:
        await response.write(data)
        self.body_bytes += len(data)
        self.bytes_by_key[request.match_info["path"]] += len(data)
