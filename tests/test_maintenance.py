"""verify, prune and warm, beside a running server; the index rebuilt at start."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp

from registry_local.config import StoreSettings
from registry_local.disk.store import DiskStore
from registry_local.oci.digest import Digest
from registry_local.transfer.imagebuild import Platform, build_image, build_index

from .support.harness import StartCache, fetch, metric, pull_image, seed
from .support.images import image_with_layer
from .support.processes import AWS_ENV, sealed_env
from .support.s3proxy import S3Proxy


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "registry_local",
        *args,
        env=sealed_env({**AWS_ENV, **(env or {})}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def test_verify_finds_a_flipped_byte_and_repair_quarantines_it(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, layer = image_with_layer(200_000)
    await seed(direct_store, "app", "v1", image)
    cache = await start_cache()
    await pull_image(cache.url, "app", "v1")
    cache_dir = str(cache.settings.cache.directory)
    code, out = await _cli("verify", "--cache-dir", cache_dir)
    assert code == 0 and "0 did not match" in out

    path = cache.blob_path(layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, out = await _cli("verify", "--cache-dir", cache_dir)
    assert code == 1 and f"MISMATCH {layer}" in out and "1 did not match" in out
    assert path.exists()  # without --repair, nothing moves

    code, out = await _cli("verify", "--cache-dir", cache_dir, "--repair")
    assert code == 1 and "quarantined" in out
    assert not path.exists()
    assert (cache.settings.cache.directory / "quarantine" / f"sha256-{layer.hex}").exists()
    # The running server fetches it again, whole and right.
    before = s3proxy.count("GET", f"{layer.hex}/data")
    status, _, body = await fetch(f"{cache.url}/v2/app/blobs/{layer}")
    assert status == 200 and Digest.of(body) == layer
    assert s3proxy.count("GET", f"{layer.hex}/data") == before + 1
    assert (await _cli("verify", "--cache-dir", cache_dir))[0] == 0


async def test_prune_beside_a_running_server(
    start_cache: StartCache, direct_store: StoreSettings
) -> None:
    images = [image_with_layer(200_000) for _ in range(3)]
    for number, (image, _) in enumerate(images):
        await seed(direct_store, f"app{number}", "v1", image)
    cache = await start_cache()
    for number in range(3):
        await pull_image(cache.url, f"app{number}", "v1")
    cache_dir = str(cache.settings.cache.directory)
    code, out = await _cli("prune", "--cache-dir", cache_dir, "--to", "0")
    assert code == 0 and "-> 0 B" in out
    assert not any(cache.blob_path(layer).exists() for _, layer in images)
    # Requests go on: what vanished is fetched again.
    for number in range(len(images)):
        assert len(await pull_image(cache.url, f"app{number}", "v1")) == 3
    code, out = await _cli("prune", "--cache-dir", cache_dir)
    assert code == 2 and "--to SIZE" in out  # no target and no limit: a clear refusal


async def test_warm_then_pull_reads_nothing_from_s3(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    per_platform = {
        Platform("linux", a): build_image([{"f": os.urandom(100_000)}], Platform("linux", a))
        for a in ("amd64", "arm64")
    }
    image = build_index(per_platform)
    await seed(direct_store, "team/app", "v1", image)
    cache = await start_cache(tag_ttl=3600)  # running before the warm-up: it must notice
    cache_dir = str(cache.settings.cache.directory)

    code, out = await _cli(
        "warm",
        "--cache-dir",
        cache_dir,
        "--s3-endpoint",
        s3proxy.url,
        "--s3-bucket",
        bucket,
        "--tag-ttl",
        "3600",
        "team/app:v1",
    )
    assert code == 0, out
    assert "3 manifests, 4 blobs" in out and "4 fetched" in out

    s3proxy.requests.clear()
    pulled = await pull_image(cache.url, "team/app", "v1")
    assert set(pulled) == {str(d) for d in [*image.blobs, *image.manifests]}
    assert s3proxy.pull_requests() == []


async def test_warm_one_platform_and_errors(
    direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str, tmp_path: Path
) -> None:
    per_platform = {
        Platform("linux", a): build_image([{"f": a.encode() * 1000}], Platform("linux", a))
        for a in ("amd64", "arm64")
    }
    image = build_index(per_platform)
    await seed(direct_store, "app", "v1", image)
    cache_dir = str(tmp_path / "cache")
    args = ("--s3-endpoint", s3proxy.url, "--s3-bucket", bucket)
    code, out = await _cli(
        "warm",
        "--cache-dir",
        cache_dir,
        *args,
        "--platform",
        "linux/arm64",
        "app:v1",
        f"app@{image.top}",
    )
    assert code == 0 and out.count("2 manifests, 2 blobs") == 2
    amd64 = per_platform[Platform("linux", "amd64")]
    assert s3proxy.count("GET", f"{next(iter(amd64.blobs)).hex}/data") == 0
    code, out = await _cli("warm", "--cache-dir", cache_dir, *args, "app:nope")
    assert code == 1 and "manifest unknown" in out
    code, out = await _cli("warm", "--cache-dir", cache_dir, *args, "--platform", "linux", "app")
    assert code == 2 and "os/arch" in out
    # A platform the image does not have is an error, not "0 blobs".
    code, out = await _cli(
        "warm", "--cache-dir", cache_dir, *args, "--platform", "linux/s390x", "app:v1"
    )
    assert code == 1 and "app:v1 has no image for linux/s390x" in out


async def test_the_warm_endpoint(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, layer = image_with_layer(200_000)
    await seed(direct_store, "app", "v1", image)
    cache = await start_cache(warm_endpoint=True)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{cache.url}/-/warm", json={"images": ["app:v1"]}) as response:
            assert response.status == 200
            (result,) = (await response.json())["results"]
        assert result["digest"] == str(image.top) and result["fetched_blobs"] == 2
        assert cache.blob_path(layer).exists()
        for body, status, code in [
            (b"not json", 400, "UNKNOWN"),
            (b'{"images": "app"}', 400, "UNKNOWN"),
            (b'{"images": ["app:v1", "app:nope"]}', 404, "MANIFEST_UNKNOWN"),
            (b'{"images": ["Bad Name"]}', 400, "NAME_INVALID"),
        ]:
            async with session.post(f"{cache.url}/-/warm", data=body) as response:
                assert response.status == status
                error = (await response.json())["errors"][0]
                assert error["code"] == code
                if code == "MANIFEST_UNKNOWN":  # which of the images, named
                    assert error["message"].startswith("app:nope: ")
                    assert error["detail"]["image"] == "app:nope"
    s3proxy.requests.clear()
    await pull_image(cache.url, "app", "v1")
    assert s3proxy.blob_gets() == {}
    assert (
        await metric(
            cache.url,
            "registry_local_http_requests_total",
            route="warm",
            method="POST",
            status="200",
        )
        == 1
    )
    # Off unless asked for.
    plain = await start_cache(cache_dir=cache.settings.cache.directory.parent / "plain")
    assert (await fetch(f"{plain.url}/-/warm", method="POST"))[0] == 404


async def test_the_index_is_rebuilt_from_disk(tmp_path: Path) -> None:
    store = await DiskStore.open(tmp_path)
    digests = []
    for number in range(2000):
        data = f"blob {number}".encode()
        digest = Digest.of(data)
        path = store.layout.blob(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digests.append((digest, len(data)))
    (store.layout.blobs_dir / "stray").write_bytes(b"not a blob")
    (store.layout.tmp_dir / "999999999.abc.part").write_bytes(b"a crashed fill")

    rebuilt = await DiskStore.open(tmp_path)
    assert len(rebuilt) == 2000
    assert rebuilt.bytes_used == sum(size for _, size in digests)
    assert all(rebuilt.blob(d) is not None for d, _ in digests[:50])
    assert list(rebuilt.layout.tmp_dir.iterdir()) == []
    # What another process removes or adds is picked up by a rescan.
    rebuilt.layout.blob(digests[0][0]).unlink()
    await rebuilt.reconcile()
    assert len(rebuilt) == 1999 and rebuilt.blob(digests[0][0]) is None
