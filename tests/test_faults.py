"""S3 faults, each through the fault-injecting proxy in front of moto.

For every fault: what clients see, that nothing corrupt is committed or served
whole, that retries are bounded and resume where they broke off, that waiting
clients are released rather than hung, and that the next request after the
fault clears succeeds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from prometheus_client import CollectorRegistry

from registry_local.backing.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from registry_local.backing.s3 import S3Backend
from registry_local.config import S3Settings, StoreSettings
from registry_local.errors import BackendUnavailable
from registry_local.fill.slots import FairSlots
from registry_local.oci.digest import Digest
from registry_local.telemetry.metrics import Metrics, S3Recorder

from .support.harness import StartCache, fetch, metric, pull_image, s3_settings, seed
from .support.images import image_with_layer
from .support.s3proxy import Fault, S3Proxy, key_endswith

MIB = 1 << 20
BOUND = 60  # seconds: a bug fails the test instead of hanging it

FAULTS: dict[str, dict[str, Any]] = {
    "503 SlowDown": {"status": 503, "code": "SlowDown"},
    "500 InternalError": {"status": 500, "code": "InternalError"},
    "connection refused": {"refuse": True},
    "reset mid-body": {"reset_at": 700 << 10},
    "stalled body": {"stall_at": 300 << 10},
    "short body": {"truncate_at": 900 << 10},
    "slow bandwidth": {"rate": 2 * MIB},  # 1 s for the blob: slow, yet it flows
}
UNAVAILABLE, REDUCE = "ServiceUnavailable", "Please reduce your request rate."
# S3 asking for fewer requests: waited out, never a failure of S3.
BACK_PRESSURE: dict[str, dict[str, Any]] = {
    "503 SlowDown": FAULTS["503 SlowDown"],
    "429 TooManyRequests": {"status": 429, "code": "TooManyRequests"},
    "503 reduce your request rate": {"status": 503, "code": UNAVAILABLE, "message": REDUCE},
}
# S3 failing: each one counts toward the circuit breaker.
FAILURES: dict[str, dict[str, Any]] = {
    "connection reset": {"refuse": True},
    "500 InternalError": FAULTS["500 InternalError"],
    "502 BadGateway": {"status": 502, "code": "BadGateway"},
    "503 ServiceUnavailable": {"status": 503, "code": UNAVAILABLE, "message": "It is down."},
}


async def _body(url: str) -> tuple[int, bytes | None]:
    """Status and the whole body, or None when the body was cut short."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        try:
            return response.status, await response.read()
        except aiohttp.ClientPayloadError:
            return response.status, None


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_passing_fault_is_absorbed(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str, fault: str
) -> None:
    image, layer = image_with_layer(2 * MIB)
    await seed(direct_store, "app", "v1", image)
    s3proxy.add(Fault(key_endswith(f"{layer.hex}/data"), times=2, **FAULTS[fault]))
    cache = await start_cache(store=s3_settings(s3proxy.url, bucket, read_timeout=0.5))
    url = f"{cache.url}/v2/app/blobs/{layer}"

    results = await asyncio.wait_for(asyncio.gather(*(_body(url) for _ in range(5))), BOUND)

    assert results == [(200, image.blobs[layer])] * 5  # clients noticed nothing
    assert cache.blob_path(layer).read_bytes() == image.blobs[layer]
    gets = [r for r in s3proxy.requests if r.key.endswith(f"{layer.hex}/data")]
    assert len(gets) <= 3  # the fill absorbed two faults, then one more read
    resumed = [r.span[0] for r in gets if r.span[0]]
    if fault in ("reset mid-body", "stalled body", "short body"):
        assert resumed and resumed[0] > 0  # resumed where it broke off, not from zero


@pytest.mark.parametrize("fault", ["500 InternalError", "connection refused"])
async def test_a_lasting_fault_releases_every_waiter(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str, fault: str
) -> None:
    image, layer = image_with_layer(2 * MIB)
    await seed(direct_store, "app", "v1", image)
    injected = s3proxy.add(Fault(key_endswith(f"{layer.hex}/data"), **FAULTS[fault]))
    cache = await start_cache(
        store=s3_settings(s3proxy.url, bucket, read_timeout=0.5), fill_attempts=2
    )
    url = f"{cache.url}/v2/app/blobs/{layer}"

    results = await asyncio.wait_for(asyncio.gather(*(_body(url) for _ in range(5))), BOUND)

    for status, body in results:  # a 503 before the headers, or a cut body: never whole
        assert status == 503 or body is None, (status, body and len(body))
    assert not cache.blob_path(layer).exists()
    assert list((cache.settings.cache.directory / "tmp").iterdir()) == []
    gets = [r for r in s3proxy.requests if r.key.endswith(f"{layer.hex}/data")]
    fills = await metric(cache.url, "registry_local_fills_started_total")
    # Bounded: each fill reads at most 3 times (2 resumes), each read makes at most
    # 3 requests, and aiohttp re-sends a request once when a reused connection is
    # dropped under it (RFC 9112 9.3.1.1). A client arriving after a fill failed
    # starts a fresh one.
    assert 1 <= fills <= 5 and len(gets) <= fills * 3 * 3 * 2

    injected.times = 0  # S3 recovers
    assert await asyncio.wait_for(_body(url), BOUND) == (200, image.blobs[layer])


async def test_a_lasting_slow_down_releases_every_waiter_and_never_opens_the_circuit(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    """S3 answers SlowDown for good: each read waits for it until its deadline
    (--s3-read-timeout), the fill gives up after its attempts, every waiter is
    released, and the breaker never opens: reads of other objects go on."""
    image, layer = image_with_layer(2 * MIB)
    other, other_layer = image_with_layer(MIB)
    await seed(direct_store, "app", "v1", image)
    await seed(direct_store, "other", "v1", other)
    slow = s3proxy.add(Fault(key_endswith(f"{layer.hex}/data"), **FAULTS["503 SlowDown"]))
    # A deadline that also leaves a busy machine's good reads (the links, the
    # other blob) room: a stall of one of those must not look like S3 failing.
    store = s3_settings(s3proxy.url, bucket, read_timeout=3.0, circuit_threshold=2)
    cache = await start_cache(store=store, fill_attempts=1)
    url = f"{cache.url}/v2/app/blobs/{layer}"

    results = await asyncio.wait_for(asyncio.gather(*(_body(url) for _ in range(5))), BOUND)

    for status, body in results:  # a 503 before the headers, or a cut body: never whole
        assert status == 503 or body is None, (status, body and len(body))
    assert not cache.blob_path(layer).exists()
    assert slow.applied > 2  # answered, and asked again past the circuit's threshold
    assert await metric(cache.url, "registry_local_s3_circuit_opened_total") == 0
    assert await metric(cache.url, "registry_local_s3_circuit_state") == CLOSED
    other_url = f"{cache.url}/v2/other/blobs/{other_layer}"
    assert await asyncio.wait_for(_body(other_url), BOUND) == (200, other.blobs[other_layer])

    slow.times = 0  # S3 catches up
    assert await asyncio.wait_for(_body(url), BOUND) == (200, image.blobs[layer])


def _breaker_settings(moto: str, proxy: S3Proxy) -> S3Settings:
    """A fresh bucket behind `proxy`, and a breaker that opens after two
    failures (and stays open): each failure is one call (one attempt)."""
    bucket = f"breaker-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings = S3Settings(bucket=bucket, endpoint=proxy.url)
    return replace(settings, attempts=1, read_timeout=BOUND, circuit_threshold=2)


@pytest.mark.parametrize("answer", list(BACK_PRESSURE))
async def test_back_pressure_is_waited_out_and_never_opens_the_circuit(
    moto: str, s3proxy: S3Proxy, tmp_path: Path, answer: str
) -> None:
    """Bursts of six back-pressure answers (three times the breaker's threshold,
    with one attempt for failures) on every kind of call: each call waits them
    out and succeeds; the circuit stays closed."""
    metrics = Metrics()
    file = tmp_path / "part"
    file.write_bytes(bytes(range(256)) * 1024)
    async with S3Backend.connect(_breaker_settings(moto, s3proxy), metrics.s3) as s3:
        await s3.write("k", b"hello")
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "GetObject": lambda: s3.read("k", 100),
            "HeadObject": lambda: s3.stat("k"),
            "conditional PutObject": lambda: s3.create("lease", b"{}"),
            "PutObject from a file": lambda: s3.write_file("part", file, 100, 5000),
        }
        for name, call in calls.items():
            burst = s3proxy.add(Fault(lambda method, key: True, times=6, **BACK_PRESSURE[answer]))
            await asyncio.wait_for(call(), BOUND)
            assert burst.applied == 6, name  # every answer of the burst came, one call waited
            assert s3.breaker.state == CLOSED, name
        assert await s3.read("k", 100) == b"hello"
        assert await s3.stat("k") == 5
        assert await s3.read("part", 10000) == file.read_bytes()[100:5000]
    assert metrics.sample("s3_circuit_opened") == 0
    assert metrics.sample("s3_retries", operation="GetObject") >= 6


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_failures_still_open_the_circuit(moto: str, s3proxy: S3Proxy, failure: str) -> None:
    metrics = Metrics()
    async with S3Backend.connect(_breaker_settings(moto, s3proxy), metrics.s3) as s3:
        await s3.write("k", b"hello")
        s3proxy.add(Fault(lambda method, key: True, **FAILURES[failure]))
        for _ in range(2):
            with pytest.raises(BackendUnavailable):
                await asyncio.wait_for(s3.read("k", 100), BOUND)
        assert s3.breaker.state == OPEN
        sent = len(s3proxy.requests)
        with pytest.raises(BackendUnavailable, match="circuit open"):
            await s3.stat("k")
        assert len(s3proxy.requests) == sent  # refused here, without asking S3
    assert metrics.sample("s3_circuit_opened") == 1


@pytest.mark.parametrize("fault", ["reset mid-body", "stalled body", "short body"])
async def test_a_body_that_keeps_breaking_still_arrives_by_resuming(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str, fault: str
) -> None:
    """Every response breaks after some bytes; each resume makes progress, so
    the fill gets there, reading each byte of the blob from S3 once."""
    image, layer = image_with_layer(2 * MIB)
    await seed(direct_store, "app", "v1", image)
    s3proxy.add(Fault(key_endswith(f"{layer.hex}/data"), **FAULTS[fault]))
    cache = await start_cache(
        store=s3_settings(s3proxy.url, bucket, read_timeout=0.5), fill_attempts=2
    )
    url = f"{cache.url}/v2/app/blobs/{layer}"

    results = await asyncio.wait_for(asyncio.gather(*(_body(url) for _ in range(5))), BOUND)

    assert results == [(200, image.blobs[layer])] * 5
    starts = [r.span[0] for r in s3proxy.requests if r.key.endswith(f"{layer.hex}/data")]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # always forward
    assert await metric(cache.url, "registry_local_fills_started_total") == 1


async def test_the_circuit_breaker_stops_hammering_a_dead_s3(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    cached, _cached_layer = image_with_layer(2 * MIB)
    await seed(direct_store, "cached", "v1", cached)
    cold = [image_with_layer(2 * MIB) for _ in range(5)]
    for number, (image, _) in enumerate(cold):
        await seed(direct_store, f"cold{number}", "v1", image)
    store = s3_settings(s3proxy.url, bucket, circuit_threshold=3, circuit_cooldown=60)
    cache = await start_cache(store=store, tag_ttl=0, fill_attempts=1)
    pulled = await pull_image(cache.url, "cached", "v1")
    for number in range(5):  # links known: only blob reads are left for S3
        assert (await fetch(f"{cache.url}/v2/cold{number}/blobs/{cold[number][1]}", method="HEAD"))[
            0
        ] == 200

    s3proxy.add(Fault(lambda method, key: True, refuse=True))  # S3 dies
    status, _, _ = await fetch(f"{cache.url}/v2/cold0/blobs/{cold[0][1]}")
    assert status == 503
    assert await metric(cache.url, "registry_local_s3_circuit_state") == OPEN
    sent = len(s3proxy.pull_requests())
    for number in range(1, 5):
        status, _, body = await fetch(f"{cache.url}/v2/cold{number}/blobs/{cold[number][1]}")
        assert status == 503 and b"UNAVAILABLE" in body
    assert len(s3proxy.pull_requests()) == sent  # nothing more reached S3
    # What the host has is still served: cached blobs, and the tag it knows.
    assert await pull_image(cache.url, "cached", "v1") == pulled
    assert (await fetch(f"{cache.url}/readyz"))[0] == 503
    assert await metric(cache.url, "registry_local_s3_circuit_opened_total") == 1


def test_the_breaker_probes_once_per_cooldown_and_backs_off() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown=1.0, max_cooldown=4.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allow()
    now[0] = 1.0
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.failure()  # the probe failed: open again, twice as long
    now[0] = 2.5
    assert not breaker.allow()
    now[0] = 3.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow()


async def test_concurrent_blob_reads_from_s3_are_bounded(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    images = [image_with_layer(2 * MIB) for _ in range(6)]
    for number, (image, _) in enumerate(images):
        await seed(direct_store, f"app{number}", "v1", image)
    gates = [
        s3proxy.add(Fault(key_endswith(f"{layer.hex}/data"), gate_at=0)) for _, layer in images
    ]
    cache = await start_cache(store=s3_settings(s3proxy.url, bucket, max_concurrency=2))
    requests = [
        asyncio.create_task(_body(f"{cache.url}/v2/app{n}/blobs/{layer}"))
        for n, (_, layer) in enumerate(images)
    ]

    first = await asyncio.wait_for(
        asyncio.wait(
            [asyncio.create_task(g.reached.wait()) for g in gates],
            return_when=asyncio.FIRST_COMPLETED,
        ),
        BOUND,
    )
    assert first
    reached = [g for g in gates if g.reached.is_set()]
    while len(reached) < 2:  # the second slot is taken as soon as its read starts
        await asyncio.wait_for(
            asyncio.wait(
                [asyncio.create_task(g.reached.wait()) for g in gates if g not in reached],
                return_when=asyncio.FIRST_COMPLETED,
            ),
            BOUND,
        )
        reached = [g for g in gates if g.reached.is_set()]
    assert len(reached) == 2 and len(s3proxy.blob_gets()) == 2
    for gate in gates:
        gate.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*requests), BOUND)
    assert results == [(200, image.blobs[layer]) for image, layer in images]


class _QueueWatch(S3Recorder):
    """An S3 recorder that lets a test await the slot queue reaching a length: a waiter
    is queued exactly when FairSlots reports it among `s3_slot_waiters`."""

    def __init__(self) -> None:
        super().__init__(CollectorRegistry())
        self.waiting = 0
        self._changed = asyncio.Event()

    def slots(self, held: int, waiting: int) -> None:
        super().slots(held, waiting)
        self.waiting = waiting
        self._changed.set()

    async def queued(self, count: int) -> None:
        """Return once `count` readers wait for a slot."""
        async with asyncio.timeout(BOUND):
            while self.waiting < count:
                self._changed.clear()
                await self._changed.wait()


async def test_slots_are_served_first_come_first_served() -> None:
    metrics = _QueueWatch()
    slots = FairSlots(1, metrics)
    order: list[int] = []
    holder = slots.slot()
    await holder.__aenter__()

    async def wait_turn(number: int) -> None:
        async with slots.slot():
            order.append(number)

    waiters = []
    for number in range(5):
        waiters.append(asyncio.create_task(wait_turn(number)))
        await metrics.queued(number + 1)  # it is in the queue before the next one starts
    waiters[2].cancel()  # one gives up while waiting
    await holder.__aexit__(None, None, None)
    await asyncio.gather(*waiters, return_exceptions=True)
    assert order == [0, 1, 3, 4]


async def test_slots_go_to_owners_in_turn() -> None:
    """A fill reading many parts at once cannot crowd out the fill queued after it."""
    metrics = _QueueWatch()
    slots = FairSlots(1, metrics)
    order: list[str] = []
    holder = slots.slot()
    await holder.__aenter__()

    async def wait_turn(owner: str, number: int) -> None:
        async with slots.slot(owner):
            order.append(f"{owner}{number}")

    waiters = []
    for owner, count in (("a", 4), ("b", 2), ("c", 1)):
        for number in range(count):
            waiters.append(asyncio.create_task(wait_turn(owner, number)))
            await metrics.queued(len(waiters))  # queued before the next one starts
    await holder.__aexit__(None, None, None)
    await asyncio.gather(*waiters)
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


async def test_a_digest_mismatch_mid_storm_commits_nothing(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, layer = image_with_layer(2 * MIB)
    await seed(direct_store, "app", "v1", image)
    s3proxy.add(Fault(key_endswith(f"{layer.hex}/data"), times=1, corrupt_at=MIB + 7))
    cache = await start_cache()
    url = f"{cache.url}/v2/app/blobs/{layer}"
    results = await asyncio.wait_for(asyncio.gather(*(_body(url) for _ in range(10))), BOUND)
    assert all(body is None or Digest.of(body) == layer for _, body in results)
    assert any(body is None for _, body in results)  # the storm on the bad fill was cut
    assert await asyncio.wait_for(_body(url), BOUND) == (200, image.blobs[layer])
