"""The fill: once per blob however many ask, streamed to every waiter, never corrupt.

S3 is moto's server behind tests/support/s3proxy.py, which counts requests at the
S3 boundary and holds or breaks response bodies on cue. Nothing here sleeps to
wait for background work: tests await gates, first-byte events and fill tasks.
"""

from __future__ import annotations

import asyncio
import os
import threading
import tracemalloc
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import aiohttp
import boto3
import pytest

from registry_local.config import StoreSettings
from registry_local.disk.store import TempBlob
from registry_local.fill.pieces import write_at
from registry_local.layout import BucketLayout
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import MANIFEST_MEDIA_TYPES
from registry_local.server.state import BLOBS
from registry_local.transfer.imagebuild import Image, build_image

from .support.harness import StartCache, fetch, pull_image, s3_settings, seed
from .support.images import blob_key
from .support.s3proxy import Fault, S3Proxy, key_endswith

T = TypeVar("T")

KIB = 1024
MANIFEST_ACCEPT = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
# Random bytes do not compress, so the layer stays as big as asked.
LAYER = os.urandom(2 * 1024 * KIB)


def _layer_image(*payloads: bytes) -> tuple[Image, list[Digest]]:
    image = build_image([{f"f{i}.bin": p} for i, p in enumerate(payloads)])
    layers = [d for d, data in image.blobs.items() if len(data) > 4 * KIB]
    return image, layers


async def _wait(awaitable: Awaitable[T], seconds: float = 60) -> T:
    """Await background work, with a bound so a bug fails instead of hanging."""
    return await asyncio.wait_for(awaitable, seconds)


async def _get_body(url: str) -> tuple[int, bytes | Exception]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            try:
                return response.status, await response.read()
            except aiohttp.ClientPayloadError as exc:
                return response.status, exc


async def test_storm_of_25_cold_clients_reads_every_object_once(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, _ = _layer_image(LAYER, os.urandom(300 * KIB), b"small")
    await seed(direct_store, "library/app", "v1", image)
    cache = await start_cache(prefetch=False)  # only clients start fills

    pulls = await _wait(
        asyncio.gather(*(pull_image(cache.url, "library/app", "v1") for _ in range(25)))
    )

    expected = {str(d): data for d, data in [*image.blobs.items(), *image.manifests.items()]}
    assert all(pull == expected for pull in pulls)  # every digest was checked in pull_image
    gets = Counter(r.key for r in s3proxy.requests if r.method == "GET")
    assert len(s3proxy.blob_gets()) == len(expected)
    assert set(gets.values()) == {1}, gets.most_common(3)  # links and tag too: once each
    metrics = cache.metrics
    blobs = len(image.blobs)
    fills, joins = metrics.sample("fills_started"), metrics.sample("fill_joins")
    hits = metrics.sample("cache_requests", kind="blob", result="hit")
    assert fills == blobs  # single flight: one fill per blob, however many asked
    # Whether a later request joined the fill or found the blob committed is up
    # to timing; the starter of each fill never joins, and every request was
    # answered by one of the three.
    assert joins <= 24 * blobs, joins
    assert fills + joins + hits >= 25 * blobs, (fills, joins, hits)


async def test_joiners_get_bytes_while_the_fill_is_still_running(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, (layer,) = _layer_image(LAYER)
    await seed(direct_store, "app", "v1", image)
    gate = s3proxy.add(Fault(key_endswith(blob_key(layer)), gate_at=256 * KIB))
    cache = await start_cache()
    url = f"{cache.url}/v2/app/blobs/{layer}"
    first_bytes = [asyncio.Event() for _ in range(25)]

    async def client(seen: asyncio.Event) -> bytes:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(len(image.blobs[layer]))
            body = bytearray(await response.content.readany())
            seen.set()
            body += await response.read()
            return bytes(body)

    clients = [asyncio.create_task(client(seen)) for seen in first_bytes]
    await _wait(asyncio.gather(*(seen.wait() for seen in first_bytes)))
    # Every client has bytes, and the fill is still held at the gate.
    assert not gate.gate.is_set()
    assert cache[BLOBS].fills.in_flight(layer) is not None
    assert not cache.blob_path(layer).exists()
    gate.gate.set()
    bodies = await _wait(asyncio.gather(*clients))
    assert all(Digest.of(body) == layer for body in bodies)
    print(
        "SPANS", [(r.method, r.span) for r in s3proxy.requests if r.key.endswith(blob_key(layer))]
    )
    assert s3proxy.count("GET", blob_key(layer)) == 1


async def test_a_client_that_leaves_does_not_stop_the_fill(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, (layer,) = _layer_image(LAYER)
    await seed(direct_store, "app", "v1", image)
    gate = s3proxy.add(Fault(key_endswith(blob_key(layer)), gate_at=128 * KIB))
    cache = await start_cache()
    url = f"{cache.url}/v2/app/blobs/{layer}"

    async with aiohttp.ClientSession() as session:
        response = await session.get(url)
        assert len(await response.content.readany()) > 0
        fill = cache[BLOBS].fills.in_flight(layer)
        assert fill is not None
        response.close()  # the only client goes away mid-body
    gate.gate.set()
    await _wait(asyncio.shield(fill.task))

    assert cache.blob_path(layer).exists()
    assert Digest.of(cache.blob_path(layer).read_bytes()) == layer
    status, _, body = await fetch(url)
    assert status == 200 and Digest.of(body) == layer
    assert s3proxy.count("GET", blob_key(layer)) == 1  # the second request was a hit


@pytest.mark.parametrize("where", ["in the bucket", "in transit"])
async def test_corrupt_bytes_are_never_committed_or_served_whole(
    start_cache: StartCache,
    direct_store: StoreSettings,
    s3proxy: S3Proxy,
    moto: str,
    bucket: str,
    where: str,
) -> None:
    image, (layer,) = _layer_image(LAYER)
    await seed(direct_store, "app", "v1", image)
    good = image.blobs[layer]
    key = blob_key(layer)
    # The first read is held before the bad byte until all five clients follow it.
    gate = Fault(key_endswith(key), times=1, gate_at=128 * KIB)
    if where == "in the bucket":
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 1
        boto3.client("s3", endpoint_url=moto).put_object(Bucket=bucket, Key=key, Body=bytes(bad))
    else:
        gate.corrupt_at = len(good) // 2
    s3proxy.add(gate)
    cache = await start_cache()
    url = f"{cache.url}/v2/app/blobs/{layer}"
    first_bytes = [asyncio.Event() for _ in range(5)]

    async def client(seen: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert await response.content.readany()
            seen.set()
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()  # cut short: never all the bytes

    clients = [asyncio.create_task(client(seen)) for seen in first_bytes]
    await _wait(asyncio.gather(*(seen.wait() for seen in first_bytes)))
    assert s3proxy.count("GET", key) == 1  # all five follow the one fill, held at the gate
    gate.gate.set()
    await _wait(asyncio.gather(*clients))
    assert not cache.blob_path(layer).exists()
    assert list((cache.settings.cache.directory / "tmp").iterdir()) == []
    assert cache.metrics.sample("fills_finished", outcome="digest_mismatch") == 1

    # The next request starts a fresh fill.
    status, body = await _wait(_get_body(url))
    if where == "in the bucket":
        assert status == 503 or isinstance(body, Exception)
    else:
        assert status == 200 and body == good
        assert cache.blob_path(layer).read_bytes() == good
    assert s3proxy.count("GET", key) == 2


async def test_a_reset_mid_body_resumes_from_the_byte_reached(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, (layer,) = _layer_image(LAYER)
    await seed(direct_store, "app", "v1", image)
    key = blob_key(layer)
    s3proxy.add(Fault(key_endswith(key), times=1, reset_at=700 * KIB))
    cache = await start_cache()

    status, body = await _wait(_get_body(f"{cache.url}/v2/app/blobs/{layer}"))

    assert status == 200 and body == image.blobs[layer]
    first, second = [r for r in s3proxy.requests if r.key.endswith(key)]
    assert first.span[0] == 0
    resumed_at, end = second.span
    assert 0 < resumed_at <= 700 * KIB  # from the byte reached, not from zero
    assert end == first.span[1]  # and to where the first read would have stopped
    assert cache.metrics.sample("fill_retries") == 1
    link = len(str(layer))  # the _layers link object read before the blob
    assert cache.metrics.sample("s3_read_bytes") == len(image.blobs[layer]) + link


async def test_a_stalled_body_is_retried_after_the_read_timeout(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image, (layer,) = _layer_image(LAYER)
    await seed(direct_store, "app", "v1", image)
    key = blob_key(layer)
    s3proxy.add(Fault(key_endswith(key), times=1, stall_at=300 * KIB))
    cache = await start_cache(store=s3_settings(s3proxy.url, bucket, read_timeout=0.5))

    status, body = await _wait(_get_body(f"{cache.url}/v2/app/blobs/{layer}"))

    assert status == 200 and body == image.blobs[layer]
    # At least the stalled read timed out and was resumed; a loaded machine may
    # time out another read, so the counts are bounds, not exact.
    reads = [r for r in s3proxy.requests if r.method == "GET" and r.key.endswith(key)]
    assert len(reads) >= 2
    assert any(r.span[0] > 0 for r in reads[1:])  # resumed, not read again from zero
    assert cache.metrics.sample("fill_retries") >= 1


async def test_an_s3_that_keeps_failing_releases_every_waiter(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, (layer,) = _layer_image(LAYER)
    await seed(direct_store, "app", "v1", image)
    key = blob_key(layer)
    fault = s3proxy.add(Fault(key_endswith(key), status=500, code="InternalError"))
    cache = await start_cache(fill_attempts=1)
    url = f"{cache.url}/v2/app/blobs/{layer}"

    results = await _wait(asyncio.gather(*(fetch(url) for _ in range(5))))

    for status, headers, body in results:
        assert status == 503 and b'"UNAVAILABLE"' in body
        assert headers["Content-Type"] == "application/json"
    assert s3proxy.count("GET", key) <= 2 * 3  # bounded: 2 fill attempts x botocore's 3
    assert not cache.blob_path(layer).exists()

    fault.times = 0  # S3 recovers
    status, _, body = await _wait(fetch(url))
    assert status == 200 and body == image.blobs[layer]


async def test_several_clients_resume_with_ranges_during_a_cold_fill(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, (layer,) = _layer_image(LAYER)
    await seed(direct_store, "app", "v1", image)
    gate = s3proxy.add(Fault(key_endswith(blob_key(layer)), gate_at=512 * KIB))
    cache = await start_cache()
    url = f"{cache.url}/v2/app/blobs/{layer}"
    data = image.blobs[layer]
    starts = [0, 1, 100 * KIB, 511 * KIB, 600 * KIB, len(data) - 10]

    requests = [asyncio.create_task(fetch(url, headers={"Range": f"bytes={s}-"})) for s in starts]
    await _wait(gate.reached.wait())
    gate.gate.set()
    for start, (status, _, body) in zip(
        starts, await _wait(asyncio.gather(*requests)), strict=True
    ):
        assert status == (200 if start == 0 else 206)
        assert body == data[start:]
    # However the reads were split (a range far ahead of the front may get a
    # read of its own), each byte crossed the link once.
    key = next(k for k in s3proxy.bytes_by_key if k.endswith(blob_key(layer)))
    assert s3proxy.bytes_by_key[key] == len(data)


async def test_memory_stays_bounded_for_a_large_blob_and_many_joiners(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    """No whole-blob buffers: peak Python allocations stay far below the blob size."""
    size = 48 << 20
    image, (layer,) = _layer_image(os.urandom(size))
    await seed(direct_store, "app", "v1", image)
    del image.blobs[layer]  # keep the test's own copy out of the measurement
    cache = await start_cache()
    url = f"{cache.url}/v2/app/blobs/{layer}"

    async def client() -> Digest:
        hasher = layer.hasher()
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            async for chunk in response.content.iter_chunked(256 * KIB):
                hasher.update(chunk)
        return Digest(layer.algorithm, hasher.hexdigest())

    tracemalloc.start()
    try:
        digests = await _wait(asyncio.gather(*(client() for _ in range(20))), 120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digests == [layer] * 20
    assert peak < 24 << 20, f"peak {peak >> 20} MiB for a {size >> 20} MiB blob"


async def test_a_range_gets_bytes_as_held_and_a_fill_that_then_fails_is_discarded(
    start_cache: StartCache,
    direct_store: StoreSettings,
    s3proxy: S3Proxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A range of a blob still filling is sent as the bucket holds it, before
    the digest is checked (as the CNCF registry sends it; lazy pullers check
    each chunk). Bytes corrupted on the way reach that range reader; the fill
    then fails its digest check: nothing is committed, the bytes that went out
    are counted and logged, and the next request reads the blob afresh."""
    image, (layer,) = _layer_image(LAYER)
    await seed(direct_store, "app", "v1", image)
    data = image.blobs[layer]
    s3proxy.add(Fault(key_endswith(blob_key(layer)), times=1, corrupt_at=100))
    cache = await start_cache()
    url = f"{cache.url}/v2/app/blobs/{layer}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Range": "bytes=0-999"}) as response:
            assert response.status == 206
            got = await response.read()
        assert len(got) == 1000 and got != data[:1000]  # as it came from the store
        assert got[:100] == data[:100] and got[101:] == data[101:1000]
        fill = cache[BLOBS].fills.in_flight(layer)
        if fill is not None:  # still running: its end, awaited
            await _wait(asyncio.shield(fill.task))
            assert fill.failed
        assert not cache.blob_path(layer).exists()
        async with session.get(url, headers={"Range": "bytes=0-999"}) as response:
            assert response.status == 206 and await response.read() == data[:1000]
    assert cache.metrics.sample("fills_finished", outcome="digest_mismatch") == 1
    assert cache.metrics.sample("range_bytes_discarded") == 1000
    # The corrupt range surely went out unverified; the second may find its
    # fill already committed (then its bytes were verified), as timing decides.
    assert 1000 <= cache.metrics.sample("range_bytes_unverified") <= 2000
    failed = [r for r in caplog.records if getattr(r, "outcome", None) == "digest_mismatch"]
    assert failed and failed[0].__dict__["range_bytes_served"] == 1000


async def test_with_verified_ranges_a_range_waits_for_the_verified_blob(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    """--verified-ranges, as the soak run once asked for: a bounded range would
    otherwise get bytes no digest has checked yet. It waits for the commit; if
    the fill fails, it is cut."""
    image, (layer,) = _layer_image(LAYER)
    await seed(direct_store, "app", "v1", image)
    data = image.blobs[layer]
    s3proxy.add(Fault(key_endswith(blob_key(layer)), times=1, corrupt_at=100))
    cache = await start_cache(verified_ranges=True)
    url = f"{cache.url}/v2/app/blobs/{layer}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Range": "bytes=0-999"}) as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()  # the corrupt fill failed: cut, never wrong bytes
        async with session.get(url, headers={"Range": "bytes=0-999"}) as response:
            assert response.status == 206 and await response.read() == data[:1000]
    assert cache.metrics.sample("range_bytes_unverified") == 0


async def test_a_cold_request_reads_the_link_and_the_blob_together(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    """The blob's data is read while the link check is still out (one round
    trip, not two), and handed out only once the link is confirmed."""
    image, (layer,) = _layer_image(os.urandom(300 * KIB))
    await seed(direct_store, "library/app", "v1", image)
    link = BucketLayout().layer_link("library/app", layer)
    gate = s3proxy.add(Fault(key_endswith(link), gate_at=1))
    cache = await start_cache(prefetch=False)

    request = asyncio.create_task(fetch(f"{cache.url}/v2/library/app/blobs/{layer}"))
    await _wait(gate.reached.wait())  # the link check is held...
    await _wait(s3proxy.completed(1))  # ...and the whole blob was read from S3 meanwhile
    assert s3proxy.count("GET", blob_key(layer)) == 1
    assert not request.done()  # nothing handed out before the link is confirmed
    gate.gate.set()
    status, _, body = await request
    assert status == 200 and body == image.blobs[layer]


async def test_a_cold_manifest_read_takes_its_link_and_its_body_together(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    """The same for a manifest by digest: its body is read while the revision
    link check is out, and served only once the link is confirmed; a repository
    that does not link it gets 404 and none of its bytes."""
    image, _ = _layer_image(os.urandom(10 * KIB))
    await seed(direct_store, "library/app", "v1", image)
    link = BucketLayout().revision_link("library/app", image.top)
    gate = s3proxy.add(Fault(key_endswith(link), gate_at=1))
    cache = await start_cache(prefetch=False)

    url = f"{cache.url}/v2/library/app/manifests/{image.top}"
    request = asyncio.create_task(fetch(url, headers=MANIFEST_ACCEPT))
    await _wait(gate.reached.wait())  # the link check is held...
    await _wait(s3proxy.completed(1))  # ...and the manifest was read from S3 meanwhile
    assert s3proxy.count("GET", blob_key(image.top)) == 1
    assert not request.done()
    gate.gate.set()
    status, _, body = await request
    assert status == 200 and body == image.top_manifest

    url = f"{cache.url}/v2/library/other/manifests/{image.top}"
    status, _, body = await fetch(url, headers=MANIFEST_ACCEPT)
    assert status == 404 and b"MANIFEST_UNKNOWN" in body
    assert image.top_manifest not in body


async def test_a_request_in_a_repository_that_does_not_link_the_blob_gets_nothing(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, (layer,) = _layer_image(os.urandom(300 * KIB))
    await seed(direct_store, "library/app", "v1", image)
    cache = await start_cache(prefetch=False)

    status, _, body = await fetch(f"{cache.url}/v2/library/other/blobs/{layer}")

    assert status == 404 and b"BLOB_UNKNOWN" in body
    assert image.blobs[layer] not in body


async def test_a_write_outliving_its_cancelled_fill_cannot_land_in_another_file(
    tmp_path: Path,
) -> None:
    """A fill cancelled while a thread writes for it closes its file; the number
    closed is the next one open() hands out. The thread writes through its own
    descriptor, so its bytes still go to the fill's file, never to the new one."""
    temp = TempBlob.create(tmp_path / "fill.part")
    started, release, done = threading.Event(), threading.Event(), threading.Event()

    def late_write(fd: int, data: bytes) -> None:
        started.set()
        release.wait(60)
        try:
            write_at(fd, data, 0)
        finally:
            done.set()

    task = asyncio.create_task(temp.run(late_write, b"late bytes"))
    await _wait(asyncio.to_thread(started.wait, 60))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    number = temp.fd
    temp.close()
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        assert other == number  # the number was handed out again
        release.set()
        await _wait(asyncio.to_thread(done.wait, 60))
        assert os.fstat(other).st_size == 0
    finally:
        os.close(other)
    assert (tmp_path / "fill.part").read_bytes() == b"late bytes"
