"""What distribution-spec's main branch added since v1.1.1: tags set with a push by
digest (`?tag=`, answered with `OCI-Tag`), content of digest algorithms other
than sha256, `OCI-Namespace`, and tag lists in the spec's order."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import boto3
import pytest

from registry_local.config import OriginSettings, StoreSettings
from registry_local.layout import BucketLayout
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import OCI_MANIFEST
from registry_local.transfer.imagebuild import build_image

from .support.harness import RegistryLocal, StartCache, fetch, s3_settings, seed
from .support.processes import run_docker_registry
from .support.pushing import bucket_keys, error_code, push_image, send, send_seeing_all

LAYOUT = BucketLayout()


@pytest.fixture
async def pusher(start_cache: StartCache) -> RegistryLocal:
    return await start_cache(allow_push=True, allow_delete=True)


async def _tags(base: str, name: str) -> list[str]:
    status, _, body = await fetch(f"{base}/v2/{name}/tags/list")
    assert status == 200, body
    return list(json.loads(body)["tags"])


async def test_a_push_by_digest_sets_every_tag_asked_for_or_none(pusher: RegistryLocal) -> None:
    image = build_image([{"f": b"tagged by parameter"}])
    await push_image(pusher.url, "app", "first", image)
    url = f"{pusher.url}/v2/app/manifests/{image.top}"
    manifest, kind = image.top_manifest, {"Content-Type": image.media_type}

    status, answer, body = await send_seeing_all(
        "PUT", f"{url}?tag=1.2.3&tag=1.2&tag=latest&tag=1.2", manifest, kind
    )
    assert status == 201, body
    assert answer.getall("OCI-Tag") == ["1.2.3", "1.2", "latest"]  # each once, as asked
    assert answer["Docker-Content-Digest"] == str(image.top)
    assert await _tags(pusher.url, "app") == ["1.2", "1.2.3", "first", "latest"]
    for tag in ("1.2.3", "latest"):
        status, headers, _ = await send("HEAD", f"{pusher.url}/v2/app/manifests/{tag}")
        assert status == 200 and headers["Docker-Content-Digest"] == str(image.top)

    # One bad tag: nothing is set, nothing stored changes.
    status, _, body = await send("PUT", f"{url}?tag=good&tag=-bad", manifest, kind)
    assert status == 400 and error_code(body) == "TAG_INVALID"
    many = "&".join(f"tag=t{n}" for n in range(101))
    status, _, body = await send("PUT", f"{url}?{many}", manifest, kind)
    assert status == 414 and error_code(body) == "TAG_INVALID"
    assert await _tags(pusher.url, "app") == ["1.2", "1.2.3", "first", "latest"]


def _sha512_image() -> tuple[dict[Digest, bytes], bytes, Digest]:
    """Blobs, and an image manifest naming them, all by sha512 digests."""
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(3000)
    blobs = {Digest.of(data, "sha512"): data for data in (config, layer)}
    (config_digest, layer_digest) = blobs
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": str(config_digest),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": str(layer_digest),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return blobs, manifest, Digest.of(manifest, "sha512")


async def test_sha512_content_keeps_its_digest_in_registry2s_layout(
    pusher: RegistryLocal, moto: str, bucket: str, tmp_path: Path
) -> None:
    blobs, manifest, digest = _sha512_image()
    base = f"{pusher.url}/v2/app"
    status, _, body = await send("POST", f"{base}/blobs/uploads/?digest-algorithm=md5")
    assert status == 400 and error_code(body) == "DIGEST_INVALID"
    for blob_digest, data in blobs.items():  # chunked, hashed as the client said
        status, headers, _ = await send("POST", f"{base}/blobs/uploads/?digest-algorithm=sha512")
        assert status == 202
        location = headers["Location"]
        status, _, _ = await send("PATCH", location, data, {"Content-Range": f"0-{len(data) - 1}"})
        assert status == 202
        status, headers, _ = await send("PUT", f"{location}?digest={blob_digest}")
        assert status == 201 and headers["Docker-Content-Digest"] == str(blob_digest)

    kind = {"Content-Type": OCI_MANIFEST}
    status, answer, body = await send_seeing_all(
        "PUT", f"{base}/manifests/{digest}?tag=v1", manifest, kind
    )
    assert status == 201, body
    assert answer["Docker-Content-Digest"] == str(digest) and answer.getall("OCI-Tag") == ["v1"]
    for reference in ("v1", str(digest)):
        for method in ("GET", "HEAD"):
            status, headers, body = await send(method, f"{base}/manifests/{reference}")
            assert status == 200 and headers["Docker-Content-Digest"] == str(digest)
            assert body == (manifest if method == "GET" else b"")
    for blob_digest, data in blobs.items():
        status, headers, body = await send("GET", f"{base}/blobs/{blob_digest}")
        assert status == 200 and body == data
        assert headers["Docker-Content-Digest"] == str(blob_digest)

    keys = bucket_keys(moto, bucket)
    assert LAYOUT.blob_data(digest) in keys
    assert LAYOUT.revision_link("app", digest) in keys
    assert LAYOUT.tag_index_link("app", "v1", digest) in keys
    assert all(LAYOUT.blob_data(d) in keys for d in blobs)
    # registry:2 reads the same bucket and names the manifest by the same digest.
    async with run_docker_registry(tmp_path, s3_endpoint=moto, bucket=bucket) as registry2:
        accept = {"Accept": OCI_MANIFEST}
        status, headers, body = await send("GET", f"{registry2}/v2/app/manifests/v1", None, accept)
    assert status == 200 and body == manifest, body
    assert headers["Docker-Content-Digest"] == str(digest)

    # Pushed by tag, the client names no digest: the manifest is named by sha256.
    status, headers, _ = await send("PUT", f"{base}/manifests/v2", manifest, kind)
    assert status == 201 and headers["Docker-Content-Digest"] == str(Digest.of(manifest))


async def test_tags_are_listed_in_the_specs_order(pusher: RegistryLocal) -> None:
    image = build_image([{"f": b"ordered"}])
    await push_image(pusher.url, "app", "b", image)
    names = ["a", "B", "10", "9", "_x", "a.1", "a-1", "Z"]
    query = "&".join(f"tag={tag}" for tag in names)
    status, _, _ = await send(
        "PUT",
        f"{pusher.url}/v2/app/manifests/{image.top}?{query}",
        image.top_manifest,
        {"Content-Type": image.media_type},
    )
    assert status == 201
    every = sorted([*names, "b"], key=lambda tag: tag.encode())  # Go's sort.Strings: by bytes
    assert await _tags(pusher.url, "app") == every
    pages: list[str] = []
    async with asyncio.timeout(30):
        url = f"{pusher.url}/v2/app/tags/list?n=3"
        while url:
            _, headers, body = await fetch(url)
            pages += json.loads(body)["tags"]
            link = headers.get("Link", "")
            url = pusher.url + link[1 : link.index(">")] if link else ""
    assert pages == every


async def test_answers_echo_the_namespace_that_picked_the_origin(
    start_cache: StartCache, direct_store: StoreSettings, tmp_path: Path, moto: str
) -> None:
    image = build_image([{"f": b"from the origin"}])
    await seed(direct_store, "library/app", "v1", image)
    origin = await start_cache(tmp_path / "origin-cache", direct_store)
    bucket = f"test-{os.urandom(6).hex()}"
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(Bucket=bucket)
    upstream = OriginSettings(origin.url, "docker.io")
    mirror = await start_cache(
        tmp_path / "mirror", s3_settings(moto, bucket, upstreams=(upstream,))
    )
    base = f"{mirror.url}/v2/library/app"
    layer = next(iter(image.blobs))
    for path in ("manifests/v1", f"manifests/{image.top}", f"blobs/{layer}"):
        for method in ("GET", "HEAD"):
            status, headers, _ = await fetch(f"{base}/{path}?ns=docker.io", method=method)
            assert status == 200 and headers["OCI-Namespace"] == "docker.io", (path, method)
            assert headers["Docker-Content-Digest"].startswith("sha256:")
    status, headers, _ = await fetch(f"{base}/manifests/nosuchtag?ns=docker.io")
    assert status == 404 and headers["OCI-Namespace"] == "docker.io"
    # No `ns`, or one that picks no origin: nothing to echo.
    for query in ("", "?ns=quay.io"):
        status, headers, _ = await fetch(f"{base}/manifests/{image.top}{query}")
        assert status == 200 and "OCI-Namespace" not in headers
