"""Lazy pullers through a cold cache: an eStargz image made by ctr-remote, replayed.

The image is converted by ctr-remote in a real containerd and pushed with
`ctr push` into the bucket (tests/support/lazy.py); each test then starts a
registry-local with an empty cache on that bucket, behind the counting proxy,
and replays what stargz-snapshotter asks for. Every chunk is checked against
its table of contents' digest, as the snapshotter checks it.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import boto3
import pytest

from registry_local.config import StoreSettings
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import OCI_MANIFEST
from registry_local.server.state import BLOBS
from registry_local.transfer.imagebuild import build_image

from .support.harness import RegistryLocal, StartCache, s3_settings
from .support.images import blob_key
from .support.lazy import (
    LazyImage,
    estargz_image,
    layer_chunks,
    multipart_parts,
    push,
    replay_soci,
    replay_stargz,
    soci_index,
)
from .support.s3proxy import Fault, S3Proxy, key_endswith

BOUND = 60  # seconds: a bug fails the test instead of hanging it
PART = 256 * 1024


@pytest.fixture(scope="module")
def lazy(moto: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LazyImage]]:
    """A bucket holding the eStargz image, pushed once for the module."""
    bucket = f"lazy-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(Bucket=bucket)
    with estargz_image(tmp_path_factory.mktemp("estargz"), moto, bucket) as image:
        yield bucket, image


async def _cold(
    start_cache: StartCache, s3proxy: S3Proxy, bucket: str, tmp_path: Path, **options: object
) -> RegistryLocal:
    store = s3_settings(s3proxy.url, bucket, part_size=PART)
    return await start_cache(cache_dir=tmp_path / uuid.uuid4().hex, store=store, **options)


def _link_bytes(proxy: S3Proxy, digest: Digest) -> int:
    return sum(n for key, n in proxy.bytes_by_key.items() if key.endswith(blob_key(digest)))


async def _fill_done(cache: RegistryLocal, digest: Digest) -> None:
    fill = cache[BLOBS].fills.in_flight(digest)
    if fill is not None:
        await asyncio.wait_for(asyncio.shield(fill.task), BOUND)


async def test_stargz_reads_of_a_cold_layer_match_its_toc_and_read_each_byte_once(
    start_cache: StartCache, s3proxy: S3Proxy, lazy: tuple[str, LazyImage], tmp_path: Path
) -> None:
    bucket, image = lazy
    cache = await _cold(start_cache, s3proxy, bucket, tmp_path)
    async with aiohttp.ClientSession() as session:
        for digest, (size, toc) in image.layers.items():
            url = f"{cache.url}/v2/{image.name}/blobs/{digest}"
            replays = await asyncio.wait_for(
                asyncio.gather(*(replay_stargz(session, url, toc) for _ in range(3))), BOUND
            )
            for replay in replays:
                assert replay.chunks_checked > 0 and not replay.fell_back
                assert 206 in replay.statuses
            await _fill_done(cache, digest)
            assert cache.blob_path(digest).stat().st_size == size  # committed, verified
            assert _link_bytes(s3proxy, digest) <= size  # S3 bytes per blob <= 1.00
    metrics = cache.metrics
    assert metrics.sample("blob_range_requests", ranges="many") > 0
    assert metrics.sample("fills_finished", outcome="committed") == len(image.layers)
    assert metrics.sample("range_bytes_discarded") == 0


async def test_too_many_ranges_get_400_and_the_single_range_fallback_works(
    start_cache: StartCache, s3proxy: S3Proxy, lazy: tuple[str, LazyImage], tmp_path: Path
) -> None:
    """Past the bound the snapshotter's answer to a 400 (one range spanning all
    it wanted) is served, where a 200 would have sent it the whole layer."""
    bucket, image = lazy
    digest, (size, _) = max(image.layers.items(), key=lambda item: item[1][0])
    cache = await _cold(start_cache, s3proxy, bucket, tmp_path)
    url = f"{cache.url}/v2/{image.name}/blobs/{digest}"
    spans = [(i * 1000, i * 1000 + 9) for i in range(200)]  # disjoint: nothing merges
    async with aiohttp.ClientSession() as session:
        header = "bytes=" + ",".join(f"{a}-{b}" for a, b in spans)
        async with session.get(url, headers={"Range": header}) as response:
            assert response.status == 400
            assert (await response.json())["errors"][0]["code"] == "RANGE_INVALID"
        super_range = f"bytes={spans[0][0]}-{spans[-1][1]}"
        async with session.get(url, headers={"Range": super_range}) as response:
            assert response.status == 206
            assert len(await response.read()) == spans[-1][1] + 1
        async with session.get(url) as response:
            whole = await response.read()
        half = ",".join(f"{a}-{b}" for a, b in spans[:100])
        async with session.get(url, headers={"Range": f"bytes={half}"}) as response:
            parts = await multipart_parts(response)
        assert [(first, data) for first, _, data in parts] == [
            (a, whole[a : b + 1]) for a, b in spans[:100]
        ]
    assert len(whole) == size and Digest.of(whole) == digest


async def test_ranges_of_a_fill_that_then_fails_verification_are_counted_and_refilled(
    start_cache: StartCache, s3proxy: S3Proxy, lazy: tuple[str, LazyImage], tmp_path: Path
) -> None:
    """A byte flipped on its way from S3 reaches the lazy puller, whose chunk
    check rejects it; the fill fails its digest check and is discarded, the
    range bytes it served are counted, and the next reads are whole and right."""
    bucket, image = lazy
    digest, (size, toc) = max(image.layers.items(), key=lambda item: item[1][0])
    s3 = boto3.client("s3", endpoint_url=s3proxy.upstream, region_name="us-east-1")
    data = s3.get_object(Bucket=bucket, Key=blob_key(digest))["Body"].read()
    first = layer_chunks(data, toc)[0]  # the first chunk the replay reads
    assert first.end < PART  # in the fill's first read, from byte 0
    match = key_endswith(blob_key(digest))
    s3proxy.add(Fault(match, times=1, starting_at=0, corrupt_at=first.start + 10))
    # The third part waits until the replay has read its chunks: the fill cannot
    # end (and be discarded) before the lazy puller sees the bytes it sent.
    held = s3proxy.add(Fault(match, times=1, starting_at=2 * PART, gate_at=0))
    cache = await _cold(start_cache, s3proxy, bucket, tmp_path)
    url = f"{cache.url}/v2/{image.name}/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AssertionError, match="does not match its digest"):
            await asyncio.wait_for(replay_stargz(session, url, toc), BOUND)
        held.gate.set()
        await _fill_done(cache, digest)
        assert not cache.blob_path(digest).exists()
        metrics = cache.metrics
        assert metrics.sample("fills_finished", outcome="digest_mismatch") == 1
        assert metrics.sample("range_bytes_discarded") > 0
        replay = await asyncio.wait_for(replay_stargz(session, url, toc), BOUND)
        assert replay.chunks_checked > 0
    await _fill_done(cache, digest)
    assert cache.blob_path(digest).stat().st_size == size


async def test_with_no_room_in_the_cache_ranges_come_straight_from_the_bucket(
    start_cache: StartCache, s3proxy: S3Proxy, lazy: tuple[str, LazyImage], tmp_path: Path
) -> None:
    """A cache too small for the layer: each range is read from the bucket as
    asked, not widened to the whole layer."""
    bucket, image = lazy
    digest, (size, toc) = max(image.layers.items(), key=lambda item: item[1][0])
    cache = await _cold(start_cache, s3proxy, bucket, tmp_path, max_bytes=1 << 20)
    url = f"{cache.url}/v2/{image.name}/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        replay = await asyncio.wait_for(replay_stargz(session, url, toc, chunks=8), BOUND)
    assert replay.chunks_checked == 8
    assert cache.metrics.sample("cache_bypass") > 0
    assert _link_bytes(s3proxy, digest) < size / 2  # the footer, the TOC, 8 chunks
    assert not cache.blob_path(digest).exists()


async def test_soci_reads_find_the_index_by_referrers_then_read_spans_of_a_cold_layer(
    start_cache: StartCache, s3proxy: S3Proxy, direct_store: StoreSettings, bucket: str
) -> None:
    """soci-snapshotter's order: the SOCI index through the referrers API, its
    ztocs whole, then spans of each layer by range, several at once."""
    image = build_image(
        [{"big.bin": os.urandom(3 << 20)}, {"small": b"x" * 1000}], media_type=OCI_MANIFEST
    )
    pusher = await start_cache(allow_push=True)
    listed = json.loads(image.top_manifest)["layers"]
    layers = {Digest.parse(d["digest"]): image.blobs[Digest.parse(d["digest"])] for d in listed}
    index, blobs = soci_index(image.manifests[image.top], layers, span=300_000)
    async with aiohttp.ClientSession() as session:
        await push(session, pusher.url, "team/app", image.blobs, image.manifests[image.top], "v1")
        await push(session, pusher.url, "team/app", blobs, index, str(Digest.of(index)))
        cold = await start_cache(cache_dir=pusher.settings.cache.directory.parent / "cold")
        replay = await asyncio.wait_for(
            replay_soci(session, cold.url, "team/app", image.top), BOUND
        )
    assert replay.ztocs == len(layers)
    assert replay.spans_checked == sum(-(-len(d) // 300_000) for d in layers.values())
    for digest, data in layers.items():
        await _fill_done(cold, digest)
        assert cold.blob_path(digest).read_bytes() == data
        assert _link_bytes(s3proxy, digest) <= len(data)  # each byte read from S3 once
