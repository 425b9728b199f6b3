"""Tags are trusted for the TTL, revalidated after, served stale when S3 fails;
everything committed survives a restart and is served with no S3 request."""

from __future__ import annotations

from pathlib import Path

from registry_local.config import StoreSettings
from registry_local.layout import BucketLayout
from registry_local.transfer.imagebuild import build_image

from .support.harness import StartCache, fetch, pull_image, seed
from .support.s3proxy import Fault, S3Proxy

OLD = build_image([{"v": b"old"}])
NEW = build_image([{"v": b"new"}])


async def _tag_digest(url: str, name: str = "app", tag: str = "v1") -> tuple[int, str | None]:
    status, headers, _ = await fetch(f"{url}/v2/{name}/manifests/{tag}", method="HEAD")
    return status, headers.get("Docker-Content-Digest")


def _everything_fails(method: str, key: str) -> bool:
    return True


async def test_a_tag_is_trusted_for_its_ttl(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    await seed(direct_store, "app", "v1", OLD)
    cache = await start_cache(tag_ttl=3600)
    assert await _tag_digest(cache.url) == (200, str(OLD.top))
    await seed(direct_store, "app", "v1", NEW)
    before = len(s3proxy.pull_requests())
    assert await _tag_digest(cache.url) == (200, str(OLD.top))
    assert len(s3proxy.pull_requests()) == before  # not asked again within the TTL
    assert cache.metrics.sample("cache_requests", kind="tag", result="hit") == 1


async def test_an_expired_tag_is_revalidated(
    start_cache: StartCache, direct_store: StoreSettings
) -> None:
    await seed(direct_store, "app", "v1", OLD)
    cache = await start_cache(tag_ttl=0)
    assert await _tag_digest(cache.url) == (200, str(OLD.top))
    assert await _tag_digest(cache.url) == (200, str(OLD.top))
    await seed(direct_store, "app", "v1", NEW)
    assert await _tag_digest(cache.url) == (200, str(NEW.top))
    revalidations = "tag_revalidations"
    assert cache.metrics.sample(revalidations, outcome="changed") == 2  # first sight, retag
    assert cache.metrics.sample(revalidations, outcome="unchanged") == 1


async def test_a_deleted_tag_disappears_after_the_ttl(
    start_cache: StartCache, direct_store: StoreSettings, moto: str, bucket: str
) -> None:
    import boto3

    await seed(direct_store, "app", "v1", OLD)
    cache = await start_cache(tag_ttl=0)
    assert (await _tag_digest(cache.url))[0] == 200
    s3 = boto3.client("s3", endpoint_url=moto)
    prefix = BucketLayout().tag_dir("app", "v1")
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    status, _, body = await fetch(f"{cache.url}/v2/app/manifests/v1")
    assert status == 404 and b"MANIFEST_UNKNOWN" in body


async def test_known_tags_and_cached_content_are_served_while_s3_is_down(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    await seed(direct_store, "app", "v1", OLD)
    cache = await start_cache(tag_ttl=0)
    pulled = await pull_image(cache.url, "app", "v1")

    s3proxy.add(Fault(_everything_fails, status=503))  # S3 goes down
    assert await pull_image(cache.url, "app", "v1") == pulled
    assert cache.metrics.sample("stale_served", kind="tag") >= 1
    # What was never known cannot be made up: a clear 503, not a 404 or a 500.
    status, headers, body = await fetch(f"{cache.url}/v2/app/manifests/other")
    assert status == 503 and b'"UNAVAILABLE"' in body
    assert headers["Content-Type"] == "application/json"


async def test_a_restart_serves_everything_from_disk_with_no_s3_request(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy, tmp_path: Path
) -> None:
    await seed(direct_store, "app", "v1", OLD)
    first = await start_cache(tag_ttl=3600)
    pulled = await pull_image(first.url, "app", "v1")
    await first.stop()

    s3proxy.requests.clear()
    s3proxy.add(Fault(_everything_fails, refuse=True))  # and S3 is unreachable too
    second = await start_cache(tag_ttl=3600)
    assert await pull_image(second.url, "app", "v1") == pulled
    status, _, _ = await fetch(f"{second.url}/v2/app/manifests/v1", method="HEAD")
    assert status == 200
    # Nothing but the start's probe of the bucket (HeadBucket: no key), and the
    # notes of use for gc, written in the background (they fail here: retried
    # at a later use); no read at all.
    assert [r for r in s3proxy.pull_requests() if "/" in r.key] == []
    assert {r.method for r in s3proxy.requests if "/registry-local/uses/" in r.key} <= {"PUT"}


async def test_partial_files_left_by_a_crash_are_removed_at_start(
    start_cache: StartCache, tmp_path: Path
) -> None:
    tmp = tmp_path / "cache" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "0123.part").write_bytes(b"half a blob")
    await start_cache()
    assert list(tmp.iterdir()) == []
