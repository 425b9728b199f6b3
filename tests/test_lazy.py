"""Lazy pulling through the cache: ranges of cold blobs at once, multi-range answers.

Lazy pullers (containerd's stargz and SOCI snapshotters) read a layer's footer,
its table of contents and then chunks, by Range, several ranges per request,
before the layer is whole. S3 is moto's server behind the counting proxy, which
holds the front of a blob at a gate, so a test sees that a range is answered
while the bytes before it have not arrived: it waits for its own bytes only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import boto3

from registry_local.config import OriginSettings, StoreSettings
from registry_local.oci.byterange import MAX_RANGES
from registry_local.oci.digest import Digest
from registry_local.server.state import BLOBS
from registry_local.transfer.imagebuild import build_image

from .support.harness import RegistryLocal, StartCache, htpasswd_origin, s3_settings, seed
from .support.images import blob_key, image_with_layer
from .support.s3proxy import Fault, S3Proxy, key_endswith

KIB, MIB = 1024, 1 << 20
PART = 256 * KIB
BOUND = 60  # seconds: a bug fails the test instead of hanging it


async def _cache(start_cache: StartCache, url: str, bucket: str, **options: Any) -> RegistryLocal:
    store = s3_settings(url, bucket, part_size=PART, fill_concurrency=4)
    return await start_cache(store=store, **options)


async def _get(
    session: aiohttp.ClientSession, url: str, ranges: str | None = None
) -> tuple[int, dict[str, str], list[tuple[str, bytes]]]:
    """Status, headers and the parts of the answer: (Content-Range, bytes) each
    (one part, with the response's own Content-Range, unless it is multipart)."""
    headers = {"Accept-Encoding": "identity"}
    if ranges is not None:
        headers["Range"] = ranges
    async with session.get(url, headers=headers) as response:
        found = dict(response.headers)
        if not response.headers.get("Content-Type", "").startswith("multipart/byteranges"):
            return response.status, found, [(found.get("Content-Range", ""), await response.read())]
        parts = []
        reader = aiohttp.MultipartReader.from_response(response)
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            assert part.headers["Content-Type"] == "application/octet-stream"
            parts.append((part.headers["Content-Range"], bytes(await part.read(decode=False))))
        return response.status, found, parts


def _s3_bytes(proxy: S3Proxy, digest: Digest) -> int:
    return sum(n for key, n in proxy.bytes_by_key.items() if key.endswith(blob_key(digest)))


async def test_several_ranges_are_one_multipart_answer_merged_where_they_touch(
    start_cache: StartCache,
    direct_store: StoreSettings,
    s3proxy: S3Proxy,
    bucket: str,
    tmp_path: Path,
) -> None:
    image, layer = image_with_layer(2 * MIB)
    data = image.blobs[layer]
    size = len(data)
    await seed(direct_store, "app", "v1", image)
    for warm in (False, True):  # a cold blob (filling), then the committed file
        cache = await _cache(start_cache, s3proxy.url, bucket, cache_dir=tmp_path / str(warm))
        url = f"{cache.url}/v2/app/blobs/{layer}"
        async with aiohttp.ClientSession() as session:
            if warm:
                assert (await _get(session, url))[2][0][1] == data
            status, headers, parts = await _get(
                session, url, "bytes=1000-1999, 100-199,150-299,-51,300-349"
            )
            assert status == 206
            assert headers["Docker-Content-Digest"] == str(layer)
            assert (
                parts
                == [
                    (f"bytes 100-349/{size}", data[100:350]),  # overlapping and touching: one
                    (f"bytes 1000-1999/{size}", data[1000:2000]),
                    (f"bytes {size - 51}-{size - 1}/{size}", data[-51:]),
                ]
            )
            assert int(headers["Content-Length"]) > 250 + 1000 + 51  # part headers counted
            # Ranges that merge into one are a plain 206.
            status, headers, parts = await _get(session, url, "bytes=0-9,10-19")
            assert (status, parts) == (206, [(f"bytes 0-19/{size}", data[:20])])
            assert headers["Content-Type"] == "application/octet-stream"
            # Past the bound: 400 in the OCI envelope, which stargz-snapshotter
            # answers by asking for one range.
            many = ",".join(f"{3 * i}-{3 * i}" for i in range(MAX_RANGES + 1))
            status, _, parts = await _get(session, url, f"bytes={many}")
            assert status == 400
            assert json.loads(parts[0][1])["errors"][0]["code"] == "RANGE_INVALID"
            status, headers, _ = await _get(session, url, f"bytes={size}-")
            assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")
        fill = cache[BLOBS].fills.in_flight(layer)
        if fill is not None:  # the rest of the blob, after the ranges: awaited
            await asyncio.wait_for(asyncio.shield(fill.task), BOUND)
        metrics = cache.metrics
        assert metrics.sample("blob_range_requests", ranges="many") == 1
        assert metrics.sample("blob_range_requests", ranges="one") == 1
        assert metrics.sample("blob_range_requests", ranges="too_many") == 1
    assert _s3_bytes(s3proxy, layer) == 2 * size  # each cache read each byte once


async def test_a_range_of_a_cold_blob_waits_only_for_its_own_bytes(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    """The front of the blob is held at the proxy: ranges far from it, one or
    several per request, are answered all the same, and the size probe too;
    a reader of the whole blob waits. Then every byte crossed the link once."""
    image, layer = image_with_layer(4 * MIB)
    data = image.blobs[layer]
    size = len(data)
    await seed(direct_store, "app", "v1", image)
    front = s3proxy.add(Fault(key_endswith(blob_key(layer)), starting_at=0, gate_at=64 * KIB))
    cache = await _cache(start_cache, s3proxy.url, bucket)
    url = f"{cache.url}/v2/app/blobs/{layer}"
    async with aiohttp.ClientSession() as session:
        async with session.head(url) as response:  # the size first, as lazy pullers ask
            assert response.headers["Content-Length"] == str(size)
        whole = asyncio.create_task(_get(session, url))
        status, _, parts = await asyncio.wait_for(_get(session, url, "bytes=0-1"), BOUND)
        assert (status, parts) == (206, [(f"bytes 0-1/{size}", data[:2])])
        footer = f"bytes={size - 51}-{size - 1}"
        status, _, parts = await asyncio.wait_for(_get(session, url, footer), BOUND)
        assert (status, parts[0][1]) == (206, data[-51:])
        chunks = "bytes=1048576-1310719,2097152-2359295,3145728-3407871"
        status, _, parts = await asyncio.wait_for(_get(session, url, chunks), BOUND)
        assert status == 206
        assert [p[1] for p in parts] == [
            data[1 << 20 : (1 << 20) + PART],
            data[2 << 20 : (2 << 20) + PART],
            data[3 << 20 : (3 << 20) + PART],
        ]
        # All of that while the front of the blob was still held back:
        assert not front.gate.is_set() and not whole.done()
        fill = cache[BLOBS].fills.in_flight(layer)
        assert fill is not None and fill.readable <= 64 * KIB
        front.gate.set()
        status, _, parts = await asyncio.wait_for(whole, BOUND)
        assert (status, parts[0][1]) == (200, data)
    await asyncio.wait_for(asyncio.shield(fill.task), BOUND)
    assert cache.blob_path(layer).read_bytes() == data
    assert _s3_bytes(s3proxy, layer) == size  # ranges never made a byte cross twice
    gets = [r for r in s3proxy.requests if r.method == "GET" and r.key.endswith(blob_key(layer))]
    spans = sorted(r.span for r in gets)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and end <= start  # no two GETs overlap
    assert cache.metrics.sample("fill_demand_reads") >= 1  # the footer at least
    assert cache.metrics.sample("range_bytes_unverified") > 0


async def test_ranges_of_a_blob_only_an_origin_has_come_at_once_when_it_honours_range(
    start_cache: StartCache, tmp_path: Path, moto: str, bucket: str
) -> None:
    """The CNCF registry as the origin honours Range: once that is known (the
    first answer of the origin says so), a range at the tail of a blob the bucket
    lacks is read on its own while the front is held. An origin that ignores
    Range (here: its proxy drops the header) is counted, and the fill goes on in
    order."""
    image = build_image([{"big.bin": os.urandom(3 * MIB)}])
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    data = image.blobs[layer]
    async with htpasswd_origin(tmp_path, image, "puller", "s3cret") as origin_url:
        proxy = await S3Proxy(origin_url).start()
        try:
            front = proxy.add(
                Fault(key_endswith(f"blobs/{layer}"), starting_at=0, gate_at=64 * KIB)
            )
            settings = OriginSettings(proxy.url, "*", "puller", "s3cret")
            store = s3_settings(moto, bucket, part_size=PART, upstreams=(settings,))
            cache = await start_cache(store=store)
            url = f"{cache.url}/v2/team/app/blobs/{layer}"
            async with aiohttp.ClientSession() as session:
                # A pull reads the config first: its answer says the origin honours Range.
                config = next(d for d in image.blobs if d != layer)
                await _get(session, f"{cache.url}/v2/team/app/blobs/{config}")
                whole = asyncio.create_task(_get(session, url))
                await asyncio.wait_for(front.reached.wait(), BOUND)
                footer = f"bytes={len(data) - 51}-{len(data) - 1}"
                status, _, parts = await asyncio.wait_for(_get(session, url, footer), BOUND)
                assert (status, parts[0][1]) == (206, data[-51:])
                assert not whole.done()
                front.gate.set()
                assert (await asyncio.wait_for(whole, BOUND))[2][0][1] == data
            assert cache.metrics.sample("origin_range_ignored") == 0
            origin_bytes = sum(n for k, n in proxy.bytes_by_key.items() if k.endswith(str(layer)))
            assert origin_bytes == len(data)  # the origin sent each byte once

            # An origin that ignores Range: counted; the fill reads it in order.
            proxy.faults.remove(front)
            proxy.add(Fault(key_endswith(f"blobs/{layer}"), drop_range=True))
            fresh = f"{bucket}-b"
            boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(
                Bucket=fresh
            )
            other = await start_cache(
                cache_dir=tmp_path / "other",
                store=s3_settings(moto, fresh, upstreams=(settings,)),
            )
            status, _, parts = await _get_once(other, layer, footer)
            assert (status, parts[0][1]) == (206, data[-51:])
            assert other.metrics.sample("origin_range_ignored") == 1
        finally:
            await proxy.close()


async def _get_once(
    cache: RegistryLocal, layer: Digest, ranges: str
) -> tuple[int, dict[str, str], list[tuple[str, bytes]]]:
    async with aiohttp.ClientSession() as session:
        return await asyncio.wait_for(
            _get(session, f"{cache.url}/v2/team/app/blobs/{layer}", ranges), BOUND
        )
