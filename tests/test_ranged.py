"""Ranged fills: a large blob read as several parts at once, still in order for readers.

S3 is moto's server behind tests/support/s3proxy.py, which records every ranged
GET, caps each stream's speed, and holds, resets or corrupts one part on cue
(a fault's `starting_at` picks the part by the offset its range starts at).
Parts here are small (256 KiB) so that a 2 MiB blob has eight of them.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

from registry_local.config import StoreSettings
from registry_local.oci.digest import Digest
from registry_local.server.state import BLOBS
from registry_local.transfer.imagebuild import build_image

from .support.harness import RegistryLocal, StartCache, s3_settings, seed
from .support.images import image_with_layer
from .support.s3proxy import Fault, Recorded, S3Proxy, key_endswith

KIB = 1024
PART = 256 * KIB
CONCURRENCY = 4
BOUND = 60  # seconds: a bug fails the test instead of hanging it


def _gets(proxy: S3Proxy, layer: Digest) -> list[Recorded]:
    return [r for r in proxy.requests if r.method == "GET" and r.key.endswith(f"{layer.hex}/data")]


def _bytes_from_s3(proxy: S3Proxy, layer: Digest) -> int:
    return sum(n for key, n in proxy.bytes_by_key.items() if key.endswith(f"{layer.hex}/data"))


class Reader:
    """A client reading the blob, keeping what it has received so far."""

    def __init__(self, url: str) -> None:
        self.received = bytearray()
        self.status = 0
        self.error: Exception | None = None
        self.task = asyncio.create_task(self._read(url))

    async def _read(self, url: str) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                self.status = response.status
                try:
                    async for chunk in response.content.iter_any():
                        self.received += chunk
                except aiohttp.ClientPayloadError as exc:
                    self.error = exc


async def _ranged_cache(
    start_cache: StartCache, bucket: str, s3proxy: S3Proxy, **store: Any
) -> RegistryLocal:
    options = {"part_size": PART, "fill_concurrency": CONCURRENCY, **store}
    return await start_cache(store=s3_settings(s3proxy.url, bucket, **options))


async def test_a_ranged_fill_is_complete_verified_and_fed_to_joiners_in_order(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image, layer = image_with_layer(2048 * KIB)
    size = len(image.blobs[layer])
    await seed(direct_store, "app", "v1", image)
    match = key_endswith(f"{layer.hex}/data")
    # Every stream is slow; part 0 is held a little way in until the others are done.
    held = s3proxy.add(Fault(match, times=1, starting_at=0, gate_at=100 * KIB))
    s3proxy.add(Fault(match, rate=4e6))
    cache = await _ranged_cache(start_cache, bucket, s3proxy)
    url = f"{cache.url}/v2/app/blobs/{layer}"

    readers = [Reader(url) for _ in range(3)]
    await asyncio.wait_for(held.reached.wait(), BOUND)
    parts = -(-size // PART)
    await asyncio.wait_for(s3proxy.completed(parts - 1), BOUND)  # every part but part 0

    fill = cache[BLOBS].fills.in_flight(layer)
    assert fill is not None and fill.readable <= 100 * KIB  # the gap at part 0 holds all back
    for reader in readers:
        assert len(reader.received) <= 100 * KIB
        assert reader.received == image.blobs[layer][: len(reader.received)]
    held.gate.set()
    await asyncio.wait_for(asyncio.gather(*(r.task for r in readers)), BOUND)

    for reader in readers:
        assert (reader.status, reader.error) == (200, None)
        assert Digest.of(bytes(reader.received)) == layer
    assert cache.blob_path(layer).read_bytes() == image.blobs[layer]
    spans = sorted(r.span for r in _gets(s3proxy, layer))
    assert spans == [(k * PART, min((k + 1) * PART, size)) for k in range(parts)]  # each once
    assert _bytes_from_s3(s3proxy, layer) == size  # each byte crossed the link once
    assert 2 <= s3proxy.peak_active <= CONCURRENCY
    await asyncio.wait_for(asyncio.shield(fill.task), BOUND)  # its last words: metrics
    metrics = cache.metrics
    assert metrics.sample("fill_parts") == parts
    assert metrics.sample("fill_part_retries") == 0
    assert metrics.sample("fill_throughput_bytes_per_second_sum") > 0


async def test_a_reset_in_one_part_resumes_that_part_only(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image, layer = image_with_layer(2048 * KIB)
    size = len(image.blobs[layer])
    await seed(direct_store, "app", "v1", image)
    broken = 3 * PART
    s3proxy.add(
        Fault(key_endswith(f"{layer.hex}/data"), times=1, starting_at=broken, reset_at=100 * KIB)
    )
    cache = await _ranged_cache(start_cache, bucket, s3proxy)

    reader = Reader(f"{cache.url}/v2/app/blobs/{layer}")
    await asyncio.wait_for(reader.task, BOUND)

    assert (reader.status, reader.error) == (200, None) and reader.received == image.blobs[layer]
    starts = [r.span[0] for r in _gets(s3proxy, layer)]
    parts = -(-size // PART)
    resumed = [s for s in starts if s % PART]
    assert len(starts) == parts + 1 and len(resumed) == 1
    assert broken < resumed[0] <= broken + 100 * KIB  # from the byte reached in that part
    resumed_span = next(r.span for r in _gets(s3proxy, layer) if r.span[0] == resumed[0])
    assert resumed_span[1] == broken + PART  # to that part's end, no further
    assert sorted(s for s in starts if not s % PART) == [k * PART for k in range(parts)]
    metrics = cache.metrics
    assert metrics.sample("fill_part_retries") == 1
    assert metrics.sample("fill_retries") == 1
    link = len(str(layer))  # the _layers link object read before the blob
    assert metrics.sample("s3_read_bytes") == size + link  # nothing read twice


async def test_a_corrupted_part_fails_the_fill_and_commits_nothing(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image, layer = image_with_layer(2048 * KIB)
    await seed(direct_store, "app", "v1", image)
    s3proxy.add(
        Fault(key_endswith(f"{layer.hex}/data"), times=1, starting_at=5 * PART, corrupt_at=77)
    )
    cache = await _ranged_cache(start_cache, bucket, s3proxy)
    url = f"{cache.url}/v2/app/blobs/{layer}"

    readers = [Reader(url) for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*(r.task for r in readers)), BOUND)

    for reader in readers:  # the bad byte went out, but the body was cut short: never whole
        assert len(reader.received) < len(image.blobs[layer]) or reader.status != 200
    assert not cache.blob_path(layer).exists()
    assert list((cache.settings.cache.directory / "tmp").iterdir()) == []
    assert cache.metrics.sample("fills_finished", outcome="digest_mismatch") == 1

    again = Reader(url)  # the next request fills afresh, and right
    await asyncio.wait_for(again.task, BOUND)
    assert (again.status, bytes(again.received)) == (200, image.blobs[layer])
    assert cache.blob_path(layer).read_bytes() == image.blobs[layer]


async def test_a_part_refused_for_good_fails_the_fill_cleanly(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image, layer = image_with_layer(2048 * KIB)
    await seed(direct_store, "app", "v1", image)
    s3proxy.add(
        Fault(
            key_endswith(f"{layer.hex}/data"),
            starting_at=2 * PART,
            status=403,
            code="AccessDenied",
        )
    )
    cache = await _ranged_cache(start_cache, bucket, s3proxy)

    reader = Reader(f"{cache.url}/v2/app/blobs/{layer}")
    await asyncio.wait_for(reader.task, BOUND)

    assert reader.error is not None or reader.status != 200
    assert reader.received == image.blobs[layer][: len(reader.received)]
    assert not cache.blob_path(layer).exists()
    assert list((cache.settings.cache.directory / "tmp").iterdir()) == []
    assert cache.metrics.sample("fills_finished", outcome="failed") == 1
    assert cache[BLOBS].fills.in_flight(layer) is None  # and no part is left running
    assert s3proxy.active == 0


async def test_blobs_up_to_one_part_are_read_with_one_get(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image = build_image([{"a.bin": os.urandom(100 * KIB)}, {"b.bin": b"tiny"}])
    await seed(direct_store, "app", "v1", image)
    cache = await _ranged_cache(start_cache, bucket, s3proxy)

    for layer, data in image.blobs.items():
        reader = Reader(f"{cache.url}/v2/app/blobs/{layer}")
        await asyncio.wait_for(reader.task, BOUND)
        assert (reader.status, bytes(reader.received)) == (200, data)
        assert [r.span for r in _gets(s3proxy, layer)] == [(0, PART)]
    assert cache.metrics.sample("fill_parts") == 0


async def test_part_size_zero_reads_every_blob_as_one_stream(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image, layer = image_with_layer(2048 * KIB)
    await seed(direct_store, "app", "v1", image)
    cache = await _ranged_cache(start_cache, bucket, s3proxy, part_size=0)

    reader = Reader(f"{cache.url}/v2/app/blobs/{layer}")
    await asyncio.wait_for(reader.task, BOUND)

    assert (reader.status, bytes(reader.received)) == (200, image.blobs[layer])
    assert [r.range for r in _gets(s3proxy, layer)] == [None]
