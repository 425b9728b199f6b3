"""Prefetch: serving an image manifest starts the fills of its missing blobs.

S3 is moto behind the counting, gating proxy, so what the prefetch read is seen
at the S3 boundary, before any client asks for a blob.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import boto3

from registry_local.config import StoreSettings
from registry_local.layout import BucketLayout
from registry_local.oci.mediatypes import MANIFEST_MEDIA_TYPES
from registry_local.server.state import BLOBS, PREFETCHER
from registry_local.transfer.imagebuild import Image, Platform, build_image, build_index

from .support.harness import RegistryLocal, StartCache, fetch, pull_image, seed
from .support.images import blob_key
from .support.s3proxy import Fault, S3Proxy, key_endswith

ACCEPT = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
KIB = 1024


def _platform(arch: str) -> Image:
    return build_image(
        [{"base": os.urandom(200 * KIB)}, {"app": os.urandom(300 * KIB)}], Platform("linux", arch)
    )


def _blob_gets(proxy: S3Proxy, image: Image) -> dict[str, int]:
    """GETs of each blob's data in S3 (manifests left out)."""
    return {str(d): proxy.count("GET", blob_key(d)) for d in image.blobs}


async def _settled(cache: RegistryLocal) -> None:
    assert cache.app is not None
    await cache[PREFETCHER].settled()


async def test_a_manifest_get_fills_exactly_that_images_blobs_and_an_index_nothing(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    amd64, arm64 = _platform("amd64"), _platform("arm64")
    index = build_index({Platform("linux", "amd64"): amd64, Platform("linux", "arm64"): arm64})
    await seed(direct_store, "team/app", "v1", index)
    cache = await start_cache()

    status, _, _ = await fetch(f"{cache.url}/v2/team/app/manifests/v1", headers=ACCEPT)
    assert status == 200
    await _settled(cache)
    assert set(_blob_gets(s3proxy, amd64).values()) == {0}  # an index: nothing yet

    status, _, _ = await fetch(f"{cache.url}/v2/team/app/manifests/{amd64.top}", headers=ACCEPT)
    assert status == 200
    await _settled(cache)
    # Read from S3 before any client asked for a blob: each of this platform's once,
    # and nothing of the other platform's.
    assert set(_blob_gets(s3proxy, amd64).values()) == {1}
    assert set(_blob_gets(s3proxy, arm64).values()) == {0}
    assert cache.metrics.sample("prefetches", outcome="started") == len(amd64.blobs)
    assert cache.metrics.sample("prefetch_bytes") == sum(len(b) for b in amd64.blobs.values())

    # The pull that follows is all hits.
    pulled = await pull_image(cache.url, "team/app", "v1")
    assert all(pulled[str(d)] == data for d, data in amd64.blobs.items())
    assert set(_blob_gets(s3proxy, amd64).values()) == {1}


async def test_a_client_asking_during_a_prefetch_joins_it_one_s3_read(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image = _platform("amd64")
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    await seed(direct_store, "team/app", "v1", image)
    gate = s3proxy.add(Fault(key_endswith(blob_key(layer)), gate_at=64 * KIB))
    cache = await start_cache()

    await fetch(f"{cache.url}/v2/team/app/manifests/v1", headers=ACCEPT)
    await gate.reached.wait()  # the prefetch is reading the layer
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{cache.url}/v2/team/app/blobs/{layer}") as response,
    ):
        # Headers while the layer is still gated: the request joined the prefetch.
        gate.gate.set()
        body = await response.read()
    await _settled(cache)

    assert response.status == 200 and body == image.blobs[layer]
    assert s3proxy.count("GET", blob_key(layer)) == 1
    assert cache.metrics.sample("fill_joins") == 1


async def test_a_cache_without_room_skips_prefetch_and_the_pull_still_works(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image = _platform("amd64")
    await seed(direct_store, "team/app", "v1", image)
    cache = await start_cache(max_bytes=100 * KIB)  # no layer fits

    await fetch(f"{cache.url}/v2/team/app/manifests/v1", headers=ACCEPT)
    await _settled(cache)
    big = [d for d, data in image.blobs.items() if len(data) > 100 * KIB]
    assert cache.metrics.sample("prefetches", outcome="skipped") == len(big)
    assert all(s3proxy.count("GET", blob_key(d)) == 0 for d in big)

    pulled = await pull_image(cache.url, "team/app", "v1")
    await _settled(cache)
    assert all(pulled[str(d)] == data for d, data in image.blobs.items())
    assert cache.metrics.sample("prefetch_bytes") < 100 * KIB  # only what fits, if anything
    assert not any(cache.blob_path(d).exists() for d in big)


async def test_no_prefetch_leaves_blobs_to_the_clients(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image = _platform("amd64")
    await seed(direct_store, "team/app", "v1", image)
    cache = await start_cache(prefetch=False)

    await fetch(f"{cache.url}/v2/team/app/manifests/v1", headers=ACCEPT)

    assert cache.app is not None and PREFETCHER not in cache.app
    assert set(_blob_gets(s3proxy, image).values()) == {0}


async def test_a_prefetch_of_a_blob_its_repository_does_not_link_is_dropped(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, moto: str, bucket: str
) -> None:
    """The link check runs while the prefetch's fill starts; when the answer is
    "not linked", the fill stops, nothing is cached, and a client hears 404."""
    image = _platform("amd64")
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    await seed(direct_store, "team/app", "v1", image)
    link = BucketLayout().layer_link("team/app", layer)
    boto3.client("s3", endpoint_url=moto).delete_object(Bucket=bucket, Key=link)
    data = s3proxy.add(Fault(key_endswith(blob_key(layer)), times=1, gate_at=1))
    asked = s3proxy.add(Fault(key_endswith(link), times=1, gate_at=0))
    cache = await start_cache()

    await fetch(f"{cache.url}/v2/team/app/manifests/v1", headers=ACCEPT)
    # The fill is reading the layer while the link check is under way.
    await asyncio.wait_for(asyncio.gather(data.reached.wait(), asked.reached.wait()), 60)
    fill = cache[BLOBS].fills.in_flight(layer)
    assert fill is not None
    asked.gate.set()  # "not linked"
    await _settled(cache)
    assert fill.failed
    data.gate.set()
    await asyncio.gather(fill.task, return_exceptions=True)

    assert not cache.blob_path(layer).exists()
    assert list((cache.settings.cache.directory / "tmp").iterdir()) == []
    status, _, _ = await fetch(f"{cache.url}/v2/team/app/blobs/{layer}")
    assert status == 404
