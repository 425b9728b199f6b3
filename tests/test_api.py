"""The read API: each endpoint, its headers, its errors; Accept negotiation; Range."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiohttp
import boto3
import pytest
from multidict import CIMultiDict

from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from registry_local.transfer.imagebuild import (
    Image,
    Platform,
    build_image,
    build_index,
    sample_image,
)

from .support.harness import StartCache, fetch, s3_settings, seed_all
from .support.images import blob_key
from .support.rawhttp import raw_request
from .support.s3proxy import S3Proxy

V2 = "registry/2.0"


def _error_code(body: bytes) -> str:
    document = json.loads(body)
    assert set(document) == {"errors"} and len(document["errors"]) == 1
    return str(document["errors"][0]["code"])


def _images() -> dict[str, Image]:
    """A repository with every manifest kind, and one with a bigger blob."""
    return {
        "docker": build_image([{"a.txt": b"docker"}]),
        "oci": build_image([{"b.txt": b"oci"}], media_type=OCI_MANIFEST),
        "list": sample_image(),
        "index": build_index(
            {
                Platform("linux", "amd64"): build_image([{"c": b"1"}], media_type=OCI_MANIFEST),
                Platform("linux", "arm64"): build_image(
                    [{"c": b"2"}], Platform("linux", "arm64"), media_type=OCI_MANIFEST
                ),
            },
            media_type=OCI_INDEX,
        ),
        "big": build_image([{"big.bin": bytes(range(256)) * 4000}]),
    }


@pytest.fixture(scope="module")
def seeded(moto: str) -> tuple[str, dict[str, Image]]:
    """One bucket for the module: these tests only read it."""
    bucket = f"api-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(Bucket=bucket)
    images = _images()
    entries = [("team/app", tag, image) for tag, image in images.items() if tag != "big"]
    asyncio.run(seed_all(s3_settings(moto, bucket), [*entries, ("team/big", "v1", images["big"])]))
    return bucket, images


@pytest.fixture
def bucket(seeded: tuple[str, dict[str, Image]]) -> str:
    return seeded[0]


@pytest.fixture
def images(seeded: tuple[str, dict[str, Image]]) -> dict[str, Image]:
    return seeded[1]


async def test_base_endpoint(start_cache: StartCache) -> None:
    cache = await start_cache()
    status, headers, body = await fetch(cache.url + "/v2/")
    assert status == 200 and json.loads(body) == {}
    assert headers["Docker-Distribution-API-Version"] == V2


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_manifest_by_tag_and_digest(
    start_cache: StartCache, images: dict[str, Image], method: str
) -> None:
    cache = await start_cache()
    image = images["docker"]
    for reference in ("docker", str(image.top)):
        status, headers, body = await fetch(
            f"{cache.url}/v2/team/app/manifests/{reference}?ns=docker.io", method=method
        )
        assert status == 200
        assert headers["Content-Type"] == DOCKER_MANIFEST
        assert headers["Docker-Content-Digest"] == str(image.top)
        assert headers["Content-Length"] == str(len(image.top_manifest))
        assert headers["Docker-Distribution-API-Version"] == V2
        assert body == (image.top_manifest if method == "GET" else b"")


async def test_manifest_etag_gives_304(start_cache: StartCache, images: dict[str, Image]) -> None:
    cache = await start_cache()
    digest = str(images["docker"].top)
    status, _, body = await fetch(
        f"{cache.url}/v2/team/app/manifests/docker", headers={"If-None-Match": f'"{digest}"'}
    )
    assert status == 304 and body == b""


@pytest.mark.parametrize("style", ["joined", "lines"])
@pytest.mark.parametrize("tag", ["oci", "index", "list"])
async def test_accept_negotiation_in_both_header_styles(
    start_cache: StartCache, images: dict[str, Image], style: str, tag: str
) -> None:
    cache = await start_cache()
    image = images[tag]
    types = [DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX]
    headers = CIMultiDict(
        [("Accept", ", ".join(types))] if style == "joined" else [("Accept", t) for t in types]
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{cache.url}/v2/team/app/manifests/{tag}", headers=headers) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == image.media_type
        assert response.headers["Docker-Content-Digest"] == str(image.top)
        assert await response.read() == image.top_manifest


@pytest.mark.parametrize("tag", ["oci", "index"])
async def test_oci_types_need_to_be_accepted(
    start_cache: StartCache, images: dict[str, Image], tag: str
) -> None:
    cache = await start_cache()
    status, _, body = await fetch(
        f"{cache.url}/v2/team/app/manifests/{tag}", accept=[DOCKER_MANIFEST, DOCKER_MANIFEST_LIST]
    )
    assert status == 404 and _error_code(body) == "MANIFEST_UNKNOWN"
    # By digest too: the stored type decides, not how it was asked for.
    status, _, body = await fetch(
        f"{cache.url}/v2/team/app/manifests/{images[tag].top}", accept=[DOCKER_MANIFEST]
    )
    assert status == 404 and _error_code(body) == "MANIFEST_UNKNOWN"


async def test_docker_schema2_is_served_whatever_the_accept(
    start_cache: StartCache, images: dict[str, Image]
) -> None:
    cache = await start_cache()
    status, headers, _ = await fetch(f"{cache.url}/v2/team/app/manifests/docker", accept=[])
    assert status == 200 and headers["Content-Type"] == DOCKER_MANIFEST


async def test_manifest_list_by_tag_falls_back_to_amd64_for_old_clients(
    start_cache: StartCache, images: dict[str, Image]
) -> None:
    cache = await start_cache()
    image = images["list"]
    amd64 = json.loads(image.top_manifest)["manifests"][0]
    assert amd64["platform"]["architecture"] == "amd64"
    status, headers, body = await fetch(
        f"{cache.url}/v2/team/app/manifests/list", accept=[DOCKER_MANIFEST]
    )
    assert status == 200
    assert headers["Docker-Content-Digest"] == amd64["digest"]
    assert str(Digest.of(body)) == amd64["digest"]
    # By digest, the list itself is served, as distribution does.
    status, headers, _ = await fetch(
        f"{cache.url}/v2/team/app/manifests/{image.top}", accept=[DOCKER_MANIFEST]
    )
    assert status == 200 and headers["Content-Type"] == DOCKER_MANIFEST_LIST


async def test_blob_get_and_head(
    start_cache: StartCache, images: dict[str, Image], s3proxy: S3Proxy
) -> None:
    cache = await start_cache()
    digest, data = next(iter(images["big"].blobs.items()))
    url = f"{cache.url}/v2/team/big/blobs/{digest}"
    status, headers, body = await fetch(url, method="HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(len(data))
    assert headers["Docker-Content-Digest"] == str(digest)
    assert s3proxy.count("GET", "/data") == 0  # HEAD does not fetch the blob
    for _ in range(2):  # cold (fill), then warm (committed file)
        status, headers, body = await fetch(url)
        assert status == 200 and body == data
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers["Docker-Content-Digest"] == str(digest)
        assert headers["Content-Length"] == str(len(data))
    status, headers, _ = await fetch(url, method="HEAD")
    assert status == 200 and headers["Content-Length"] == str(len(data))
    assert s3proxy.blob_gets() == {f"{s3proxy_bucket(s3proxy)}/{blob_key(digest)}": 1}


def s3proxy_bucket(proxy: S3Proxy) -> str:
    return next(r.key for r in proxy.requests if r.key.endswith("/data")).split("/")[0]


@pytest.mark.parametrize("warm", [False, True])
async def test_ranges(start_cache: StartCache, images: dict[str, Image], warm: bool) -> None:
    cache = await start_cache()
    digest, data = next(iter(images["big"].blobs.items()))
    url = f"{cache.url}/v2/team/big/blobs/{digest}"
    if warm:
        assert (await fetch(url))[0] == 200
    size = len(data)
    cases = {
        "bytes=0-9": (0, 10),
        "bytes=1000-": (1000, size),
        "bytes=-7": (size - 7, size),
        f"bytes=5-{size + 100}": (5, size),
    }
    for header, (start, end) in cases.items():
        status, headers, body = await fetch(url, headers={"Range": header})
        assert status == 206, header
        assert headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert headers["Content-Length"] == str(end - start)
        assert headers["Docker-Content-Digest"] == str(digest)
        assert body == data[start:end]
    # Past the end, and first byte after last (invalid): nothing to send.
    for header in (f"bytes={size}-", "bytes=500-0"):
        status, headers, body = await fetch(url, headers={"Range": header})
        assert status == 416 and _error_code(body) == "RANGE_INVALID", header
        assert headers["Content-Range"] == f"bytes */{size}"
    status, _, body = await fetch(url, headers={"Range": "bytes=garbage"})
    assert status == 200 and body == data


async def test_blob_must_be_linked_by_the_repository(
    start_cache: StartCache, images: dict[str, Image]
) -> None:
    cache = await start_cache()
    digest = next(iter(images["big"].blobs))  # linked by team/big only
    for method in ("GET", "HEAD"):
        status, _, body = await fetch(f"{cache.url}/v2/team/app/blobs/{digest}", method=method)
        assert status == 404
        if method == "GET":
            assert _error_code(body) == "BLOB_UNKNOWN"
    status, _, body = await fetch(f"{cache.url}/v2/team/app/manifests/{images['big'].top}")
    assert status == 404 and _error_code(body) == "MANIFEST_UNKNOWN"


async def test_tags_list_and_pagination(start_cache: StartCache, images: dict[str, Image]) -> None:
    cache = await start_cache()
    status, headers, body = await fetch(f"{cache.url}/v2/team/app/tags/list?ns=docker.io")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"name": "team/app", "tags": ["docker", "index", "list", "oci"]}
    status, headers, body = await fetch(f"{cache.url}/v2/team/app/tags/list?n=2")
    assert json.loads(body)["tags"] == ["docker", "index"]
    assert headers["Link"] == '</v2/team/app/tags/list?n=2&last=index>; rel="next"'
    status, headers, body = await fetch(f"{cache.url}/v2/team/app/tags/list?n=2&last=index")
    assert json.loads(body)["tags"] == ["list", "oci"] and "Link" not in headers
    status, _, body = await fetch(f"{cache.url}/v2/team/app/tags/list?last=list")
    assert json.loads(body)["tags"] == ["oci"]
    status, headers, body = await fetch(f"{cache.url}/v2/team/app/tags/list?n=0")
    assert json.loads(body)["tags"] == [] and "Link" not in headers


@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [
        ("GET", "/v2/team/app/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/nobody/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/team/app/tags/list?n=abc", 400, "PAGINATION_NUMBER_INVALID"),
        ("GET", "/v2/team/app/tags/list?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
        ("GET", "/v2/Team/app/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/" + "a" * 300 + "/manifests/latest", 400, "NAME_INVALID"),
        # Neither a tag nor a digest: no such manifest (as registry:2 answers).
        ("GET", "/v2/team/app/manifests/bad%20tag", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/team/app/manifests/" + "t" * 200, 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/team/app/manifests/sha256:abc", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/team/app/blobs/sha256:" + "g" * 64, 400, "DIGEST_INVALID"),
        ("GET", "/v2/team/app/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
        ("GET", "/v2/team/app/blobs/sha256:" + "0" * 64, 404, "BLOB_UNKNOWN"),
        ("GET", "/v2/team/%2e%2e/app/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/team/..%2f..%2fetc/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/../../../etc/passwd", 404, "UNSUPPORTED"),
        ("GET", "/v2/team/app/blobs/..%2f..%2f..%2fetc%2fpasswd", 400, "DIGEST_INVALID"),
        ("GET", "/nothing-here", 404, "UNSUPPORTED"),
        ("PUT", "/v2/team/app/manifests/latest", 405, "UNSUPPORTED"),
        ("DELETE", "/v2/team/app/manifests/latest", 405, "UNSUPPORTED"),
        ("DELETE", "/v2/team/app/blobs/sha256:" + "0" * 64, 405, "UNSUPPORTED"),
        ("POST", "/v2/team/app/blobs/uploads/", 405, "UNSUPPORTED"),
        ("PATCH", "/v2/team/app/blobs/uploads/some-id", 405, "UNSUPPORTED"),
        ("POST", "/v2/", 405, "UNSUPPORTED"),
    ],
)
async def test_errors_are_oci_envelopes(
    start_cache: StartCache,
    images: dict[str, Image],
    method: str,
    target: str,
    status: int,
    code: str,
) -> None:
    cache = await start_cache()
    got_status, headers, document = await raw_request(cache.url, target, method)
    assert got_status == status
    assert headers["Content-Type"] == "application/json"
    assert headers["Docker-Distribution-API-Version"] == V2
    assert document["errors"][0]["code"] == code
    assert "Traceback" not in json.dumps(document)


async def test_nothing_outside_the_cache_dir_is_created(
    start_cache: StartCache, tmp_path: Path, images: dict[str, Image]
) -> None:
    cache = await start_cache()
    for target in [
        "/v2/a/..%2f..%2f..%2fescape/manifests/x",
        "/v2/%2e%2e/blobs/sha256:" + "0" * 64,
    ]:
        status, _, _ = await raw_request(cache.url, target)
        assert 400 <= status < 500
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path.parent / "escape").exists()
