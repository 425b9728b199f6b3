"""Keeping the disk in bounds: LRU eviction, pins, restarts, and a full disk.

A full disk is a real one: a small tmpfs mounted by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from registry_local.config import StoreSettings
from registry_local.disk import store as disk_store
from registry_local.oci.digest import Digest
from registry_local.server.state import INFLIGHT

from .support.harness import StartCache, fetch, metric, pull_image, seed
from .support.images import blob_key, image_with_layer
from .support.s3proxy import Fault, S3Proxy, key_endswith

MIB = 1 << 20


async def _get(url: str) -> bytes:
    status, _, body = await fetch(url)
    assert status == 200, body[:200]
    return body


async def test_lru_eviction_keeps_the_cache_within_its_limit(
    start_cache: StartCache, direct_store: StoreSettings
) -> None:
    images = [image_with_layer(MIB) for _ in range(6)]
    for number, (image, _) in enumerate(images):
        await seed(direct_store, f"app{number}", "v1", image)
    limit = int(3.5 * MIB)
    cache = await start_cache(max_bytes=limit)

    async def pull(name: str, clients: int = 1) -> None:
        await asyncio.gather(*(pull_image(cache.url, name, "v1") for _ in range(clients)))
        # Every answer is over, so no blob stays pinned by a body still closing:
        # the next fill evicts by access order alone.
        await cache[INFLIGHT].idle()

    for number in range(5):
        await pull(f"app{number}", clients=3)  # three at once, each checking every digest
        assert await metric(cache.url, "registry_local_disk_used_bytes") <= limit
        if number == 3:
            await pull("app1")  # app1 becomes recently used
    await pull("app5")

    cached = {n for n, (_, layer) in enumerate(images) if cache.blob_path(layer).exists()}
    assert 1 in cached and 5 in cached  # recently used stays
    assert 0 not in cached and 2 not in cached  # least recently used went first
    assert await metric(cache.url, "registry_local_disk_used_bytes") <= limit
    assert await metric(cache.url, "registry_local_evictions_total") >= 3
    assert await metric(cache.url, "registry_local_cache_limit_bytes") == limit
    # Evicted blobs come back on demand.
    assert Digest.of(await _get(f"{cache.url}/v2/app0/blobs/{images[0][1]}")) == images[0][1]


async def test_a_blob_being_sent_is_not_evicted_under_it(
    start_cache: StartCache, direct_store: StoreSettings
) -> None:
    big, big_layer = image_with_layer(48 * MIB)
    other, other_layer = image_with_layer(24 * MIB)
    await seed(direct_store, "big", "v1", big)
    await seed(direct_store, "other", "v1", other)
    cache = await start_cache(max_bytes=64 * MIB)
    await _get(f"{cache.url}/v2/big/blobs/{big_layer}")  # committed, and least recently used

    async with aiohttp.ClientSession() as session:
        slow = await session.get(f"{cache.url}/v2/big/blobs/{big_layer}")
        head = await slow.content.readexactly(MIB)  # ...and then it stops reading
        # 48 + 24 MiB do not fit in 64: the big blob would go, but it is being sent.
        body = await _get(f"{cache.url}/v2/other/blobs/{other_layer}")
        assert Digest.of(body) == other_layer  # served, without caching
        assert cache.blob_path(big_layer).exists()
        assert not cache.blob_path(other_layer).exists()
        assert await metric(cache.url, "registry_local_cache_bypass_total") == 1
        rest = await slow.read()
        slow.close()
    assert Digest.of(head + rest) == big_layer


async def test_access_order_survives_a_restart(
    start_cache: StartCache, direct_store: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk_store, "TOUCH_INTERVAL", 0.0)  # write every access to disk
    images = [image_with_layer(MIB) for _ in range(4)]
    for number, (image, _) in enumerate(images):
        await seed(direct_store, f"app{number}", "v1", image)
    first = await start_cache()
    for number in (0, 1, 2, 0):  # app1 is now the least recently used
        await pull_image(first.url, f"app{number}", "v1")
    used = await metric(first.url, "registry_local_disk_used_bytes")
    await first.stop()

    second = await start_cache(max_bytes=int(used + 0.5 * MIB))
    assert await metric(second.url, "registry_local_disk_used_bytes") == used  # rebuilt index
    await pull_image(second.url, "app3", "v1")
    layers = [layer for _, layer in images]
    assert not second.blob_path(layers[1]).exists()
    assert all(second.blob_path(layers[n]).exists() for n in (0, 2, 3))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs, mounted for the test."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        message = f"cannot mount a tmpfs here: {result.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill_disk(path: Path, leave: int = 0) -> None:
    """Write a ballast file until the filesystem has at most `leave` bytes free."""
    block = b"\0" * (64 << 10)
    with path.open("wb") as f:
        with contextlib.suppress(OSError):
            while True:
                st = os.statvfs(path.parent)
                if st.f_bavail * st.f_frsize <= leave + len(block):
                    break
                f.write(block)
                f.flush()


async def test_no_room_on_disk_serves_from_s3_and_resumes_by_itself(
    start_cache: StartCache, direct_store: StoreSettings, small_disk: Path
) -> None:
    image, layer = image_with_layer(8 * MIB)
    small, small_layer = image_with_layer(MIB // 2)
    await seed(direct_store, "app", "v1", image)
    await seed(direct_store, "small", "v1", small)
    ballast = small_disk / "ballast"
    await asyncio.to_thread(_fill_disk, ballast, leave=4 * MIB)
    cache = await start_cache(cache_dir=small_disk / "cache")

    body = await _get(f"{cache.url}/v2/app/blobs/{layer}")  # does not fit: straight from S3
    assert Digest.of(body) == layer
    assert not cache.blob_path(layer).exists()
    assert list((small_disk / "cache" / "tmp").iterdir()) == []  # nothing half-written
    assert await metric(cache.url, "registry_local_cache_writable") == 0
    assert await metric(cache.url, "registry_local_cache_bypass_total") == 1

    ballast.unlink()  # space returns
    assert Digest.of(await _get(f"{cache.url}/v2/small/blobs/{small_layer}")) == small_layer
    assert cache.blob_path(small_layer).exists()
    assert await metric(cache.url, "registry_local_cache_writable") == 1


async def test_enospc_in_the_middle_of_a_fill(
    start_cache: StartCache, direct_store: StoreSettings, small_disk: Path, s3proxy: S3Proxy
) -> None:
    image, layer = image_with_layer(8 * MIB)
    await seed(direct_store, "app", "v1", image)
    gate = s3proxy.add(Fault(key_endswith(f"{layer.hex}/data"), times=1, gate_at=MIB))
    cache = await start_cache(cache_dir=small_disk / "cache")

    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{cache.url}/v2/app/blobs/{layer}")
        head = await response.content.readany()  # the fill has room and is under way
        # Something else fills the disk meanwhile.
        await asyncio.to_thread(_fill_disk, small_disk / "ballast")
        gate.gate.set()
        body = head + await response.read()
    # The client never noticed: it got every byte, from S3 once the disk was full.
    assert Digest.of(body) == layer
    assert not cache.blob_path(layer).exists()
    assert list((small_disk / "cache" / "tmp").iterdir()) == []
    assert await metric(cache.url, "registry_local_cache_writable") == 0
    assert await metric(cache.url, "registry_local_fills_finished_total", outcome="bypassed") == 1


def test_the_disk_is_really_full(small_disk: Path) -> None:
    """The premise of the tests above: the tmpfs refuses writes when full."""
    _fill_disk(small_disk / "ballast")
    with pytest.raises(OSError) as info, (small_disk / "more").open("wb") as f:
        f.write(b"x" * (1 << 20))
        f.flush()
        os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC


async def test_without_room_ranges_go_straight_through_from_the_bucket(
    start_cache: StartCache,
    direct_store: StoreSettings,
    small_disk: Path,
    s3proxy: S3Proxy,
) -> None:
    """No room to cache: a range is read from the bucket, just that range, not
    widened to the whole blob; the whole blob is still verified before its last
    byte goes out."""
    image, layer = image_with_layer(8 * MIB)
    await seed(direct_store, "app", "v1", image)
    data = image.blobs[layer]
    await asyncio.to_thread(_fill_disk, small_disk / "ballast", leave=4 * MIB)
    cache = await start_cache(cache_dir=small_disk / "cache")
    url = f"{cache.url}/v2/app/blobs/{layer}"
    key = blob_key(layer)
    async with aiohttp.ClientSession() as session:
        async with session.head(url) as response:  # as lazy pullers learn the size
            assert response.headers["Content-Length"] == str(len(data))
        for start, end in ((4 * MIB, 4 * MIB + 99), (len(data) - 51, len(data) - 1), (0, 1)):
            before = _link_bytes(s3proxy, key)
            async with session.get(url, headers={"Range": f"bytes={start}-{end}"}) as response:
                assert response.status == 206
                assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
                assert await response.read() == data[start : end + 1]
            assert _link_bytes(s3proxy, key) - before == end + 1 - start
        async with session.get(url) as response:
            assert await response.read() == data
    assert await metric(cache.url, "registry_local_cache_bypass_total") == 4
    assert not cache.blob_path(layer).exists()


def _link_bytes(proxy: S3Proxy, key: str) -> int:
    return sum(n for k, n in proxy.bytes_by_key.items() if k.endswith(key))


async def test_without_room_and_with_verified_ranges_ranges_are_still_verified(
    start_cache: StartCache, direct_store: StoreSettings, small_disk: Path, moto: str, bucket: str
) -> None:
    """--verified-ranges, as the soak run once asked for: streaming from S3 without
    caching must not send a corrupt tail, nor unverifiable bytes of a range short
    of the end (that range gets the whole blob, which is verified)."""
    import boto3

    image, layer = image_with_layer(8 * MIB)
    await seed(direct_store, "app", "v1", image)
    data = bytearray(image.blobs[layer])
    data[5 * MIB] ^= 0xFF
    key = blob_key(layer)
    boto3.client("s3", endpoint_url=moto).put_object(Bucket=bucket, Key=key, Body=bytes(data))
    await asyncio.to_thread(_fill_disk, small_disk / "ballast", leave=4 * MIB)
    cache = await start_cache(cache_dir=small_disk / "cache", verified_ranges=True)
    url = f"{cache.url}/v2/app/blobs/{layer}"
    async with aiohttp.ClientSession() as session:
        for header in ("bytes=4194304-", "bytes=0-10"):
            async with session.get(url, headers={"Range": header}) as response:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()
    assert await metric(cache.url, "registry_local_cache_bypass_total") == 2
