"""Push: the upload and manifest API, written through to S3 in distribution's layout."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import boto3
import pytest

from registry_local.config import StoreSettings
from registry_local.layout import BucketLayout
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from registry_local.server.state import PUSHER
from registry_local.transfer.imagebuild import Platform, build_image, build_index
from registry_local.transfer.oci_layout import write_oci_layout

from .support.harness import RegistryLocal, StartCache, fetch, pull_image, s3_settings, seed
from .support.images import blob_key
from .support.processes import run_docker_registry, skopeo
from .support.pushing import bucket_keys, error_code, push_image, send
from .support.s3proxy import S3Proxy

BLOB = os.urandom(300_000)
BLOB_DIGEST = Digest.of(BLOB)


@pytest.fixture
async def pusher(start_cache: StartCache) -> RegistryLocal:
    return await start_cache(allow_push=True, allow_delete=True)


async def test_skopeo_pushes_and_registry2_serves_it_byte_identical(
    pusher: RegistryLocal, tmp_path: Path, moto: str, bucket: str, s3proxy: S3Proxy
) -> None:
    per_platform = {
        Platform("linux", arch): build_image(
            [{"a.bin": os.urandom(200_000)}, {"b.txt": arch.encode() * 1000}],
            Platform("linux", arch),
            media_type=OCI_MANIFEST,
        )
        for arch in ("amd64", "arm64")
    }
    image = build_index(per_platform, media_type=OCI_INDEX)
    write_oci_layout(tmp_path / "src", image, "v1")
    rl = pusher.url.removeprefix("http://")
    await asyncio.to_thread(
        skopeo,
        tmp_path,
        "copy",
        "--all",
        "--dest-tls-verify=false",
        f"oci:{tmp_path / 'src'}:v1",
        f"docker://{rl}/team/app:v1",
    )
    expected = {str(d) for d in [*image.blobs, *image.manifests]}

    # The pushing host has every blob committed locally: pulling reads no blob from S3.
    s3proxy.requests.clear()
    assert set(await pull_image(pusher.url, "team/app", "v1")) == expected
    assert s3proxy.blob_gets() == {}

    # registry:2 on the same bucket serves exactly the same bytes.
    async with run_docker_registry(tmp_path, s3_endpoint=moto, bucket=bucket) as registry2:
        await asyncio.to_thread(
            skopeo,
            tmp_path,
            "copy",
            "--all",
            "--src-tls-verify=false",
            f"docker://{registry2.removeprefix('http://')}/team/app:v1",
            f"oci:{tmp_path / 'out'}:v1",
        )
    pulled = {f"sha256:{p.name}" for p in (tmp_path / "out" / "blobs" / "sha256").iterdir()}
    assert pulled == expected
    for digest in expected:
        hex_ = Digest.parse(digest).hex
        assert (tmp_path / "out/blobs/sha256" / hex_).read_bytes() == (
            tmp_path / "src/blobs/sha256" / hex_
        ).read_bytes()


async def test_another_host_reads_what_was_pushed_from_s3(
    pusher: RegistryLocal, start_cache: StartCache, tmp_path: Path, s3proxy: S3Proxy
) -> None:
    image = build_image([{"x": os.urandom(100_000)}])
    await push_image(pusher.url, "app", "v1", image)
    other = await start_cache(cache_dir=tmp_path / "other-host")
    s3proxy.requests.clear()
    assert set(await pull_image(other.url, "app", "v1")) == {
        str(d) for d in [*image.blobs, *image.manifests]
    }
    assert set(s3proxy.blob_gets().values()) == {1}


async def test_chunked_upload_with_content_range_and_status(pusher: RegistryLocal) -> None:
    status, headers, _ = await send("POST", f"{pusher.url}/v2/app/blobs/uploads/")
    assert status == 202 and headers["Range"] == "0-0"
    location, upload_id = headers["Location"], headers["Docker-Upload-UUID"]
    assert location.endswith(f"/v2/app/blobs/uploads/{upload_id}")
    offset = 0
    for size in (100_000, 150_000, 50_000):
        chunk = BLOB[offset : offset + size]
        status, headers, _ = await send(
            "PATCH",
            location,
            chunk,
            {
                "Content-Range": f"{offset}-{offset + size - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert status == 202
        offset += size
        assert headers["Range"] == f"0-{offset - 1}"
        assert headers["Docker-Upload-UUID"] == upload_id
    status, headers, _ = await send("GET", location)
    assert status == 204 and headers["Range"] == f"0-{len(BLOB) - 1}"
    status, headers, _ = await send("PUT", f"{location}?digest={BLOB_DIGEST}")
    assert status == 201
    assert headers["Docker-Content-Digest"] == str(BLOB_DIGEST)
    assert headers["Location"].endswith(f"/v2/app/blobs/{BLOB_DIGEST}")
    status, _, body = await fetch(f"{pusher.url}/v2/app/blobs/{BLOB_DIGEST}")
    assert status == 200 and body == BLOB
    assert (await send("GET", location))[0] == 404  # the session is gone


async def test_monolithic_uploads(pusher: RegistryLocal) -> None:
    status, headers, _ = await send(
        "POST", f"{pusher.url}/v2/app/blobs/uploads/?digest={BLOB_DIGEST}", BLOB
    )
    assert status == 201 and headers["Docker-Content-Digest"] == str(BLOB_DIGEST)
    # POST, then one PUT carrying the whole body.
    other = b"second blob"
    status, headers, _ = await send("POST", f"{pusher.url}/v2/app/blobs/uploads/")
    status, _, _ = await send("PUT", f"{headers['Location']}?digest={Digest.of(other)}", other)
    assert status == 201
    for data in (BLOB, other):
        status, _, body = await fetch(f"{pusher.url}/v2/app/blobs/{Digest.of(data)}")
        assert status == 200 and body == data


async def test_cross_repository_mount(pusher: RegistryLocal, s3proxy: S3Proxy) -> None:
    await send("POST", f"{pusher.url}/v2/source/blobs/uploads/?digest={BLOB_DIGEST}", BLOB)
    status, headers, _ = await send(
        "POST", f"{pusher.url}/v2/target/blobs/uploads/?mount={BLOB_DIGEST}&from=source"
    )
    assert status == 201 and headers["Location"].endswith(f"/v2/target/blobs/{BLOB_DIGEST}")
    assert s3proxy.count("PUT", f"/repositories/target/_layers/sha256/{BLOB_DIGEST.hex}/link") == 1
    assert (await fetch(f"{pusher.url}/v2/target/blobs/{BLOB_DIGEST}"))[2] == BLOB
    # Not linked in the named source: an ordinary session instead.
    missing = Digest.of(b"nowhere")
    status, headers, _ = await send(
        "POST", f"{pusher.url}/v2/target/blobs/uploads/?mount={missing}&from=source"
    )
    assert status == 202 and "Docker-Upload-UUID" in headers
    # Without `from`: any blob the store holds is mounted; one it lacks is a session.
    status, headers, _ = await send(
        "POST", f"{pusher.url}/v2/third/blobs/uploads/?mount={BLOB_DIGEST}"
    )
    assert status == 201 and headers["Location"].endswith(f"/v2/third/blobs/{BLOB_DIGEST}")
    assert (await fetch(f"{pusher.url}/v2/third/blobs/{BLOB_DIGEST}"))[2] == BLOB
    status, headers, _ = await send("POST", f"{pusher.url}/v2/third/blobs/uploads/?mount={missing}")
    assert status == 202 and "Docker-Upload-UUID" in headers


async def test_upload_errors(pusher: RegistryLocal) -> None:
    status, headers, _ = await send("POST", f"{pusher.url}/v2/app/blobs/uploads/")
    location = headers["Location"]
    await send("PATCH", location, b"x" * 10, {"Content-Range": "0-9"})
    # A gap: the chunk does not start where the upload ends.
    status, headers, body = await send("PATCH", location, b"y" * 5, {"Content-Range": "20-24"})
    assert status == 416 and error_code(body) == "RANGE_INVALID" and headers["Range"] == "0-9"
    status, _, body = await send("PATCH", location, b"y", {"Content-Range": "garbage"})
    assert status == 400 and error_code(body) == "BLOB_UPLOAD_INVALID"
    status, _, body = await send("PATCH", location, b"y" * 3, {"Content-Range": "10-19"})
    assert status == 400 and error_code(body) == "SIZE_INVALID"
    assert (await send("GET", location))[1]["Range"] == "0-9"  # the short chunk was undone
    status, _, body = await send("PUT", location)  # no digest
    assert status == 400 and error_code(body) == "DIGEST_INVALID"
    status, _, body = await send("PUT", f"{location}?digest={BLOB_DIGEST}")  # wrong content
    assert status == 400 and error_code(body) == "DIGEST_INVALID"
    status, _, body = await send("GET", location)
    assert status == 404 and error_code(body) == "BLOB_UPLOAD_UNKNOWN"
    for bad in ("not-a-uuid", "..%2F..%2Fetc", "00000000-0000-0000-0000-000000000000"):
        status, _, body = await send("GET", f"{pusher.url}/v2/app/blobs/uploads/{bad}")
        assert status == 404 and error_code(body) == "BLOB_UPLOAD_UNKNOWN"
    # A session belongs to its repository.
    status, headers, _ = await send("POST", f"{pusher.url}/v2/app/blobs/uploads/")
    other = headers["Location"].replace("/v2/app/", "/v2/other/")
    assert (await send("GET", other))[0] == 404


async def test_cancel_an_upload(pusher: RegistryLocal) -> None:
    _status, headers, _ = await send("POST", f"{pusher.url}/v2/app/blobs/uploads/")
    location = headers["Location"]
    await send("PATCH", location, b"abc")
    assert (await send("DELETE", location))[0] == 204
    assert (await send("GET", location))[0] == 404
    assert list((pusher.settings.cache.directory / "uploads").iterdir()) == []


async def test_manifest_validation(pusher: RegistryLocal) -> None:
    image = build_image([{"f": b"layer"}])
    manifest = image.top_manifest
    url = f"{pusher.url}/v2/app/manifests/v1"
    docker = {"Content-Type": DOCKER_MANIFEST}
    status, _, body = await send("PUT", url, manifest, docker)
    assert status == 400 and error_code(body) == "MANIFEST_BLOB_UNKNOWN"
    assert set(json.loads(body)["errors"][0]["detail"]["digests"]) == {str(d) for d in image.blobs}
    for digest, data in image.blobs.items():
        await send("POST", f"{pusher.url}/v2/app/blobs/uploads/?digest={digest}", data)
    for data, sent, code, expected in [
        (b"{not json", docker, 400, "MANIFEST_INVALID"),
        (manifest, {"Content-Type": OCI_MANIFEST}, 400, "MANIFEST_INVALID"),
        (
            b'{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}',
            {},
            400,
            "MANIFEST_INVALID",
        ),
        (b" " * (4 * 1024 * 1024 + 1), docker, 413, "MANIFEST_INVALID"),
    ]:
        status, _, body = await send("PUT", url, data, sent)
        assert (status, error_code(body)) == (code, expected)
    wrong = f"{pusher.url}/v2/app/manifests/{Digest.of(b'other')}"
    status, _, body = await send("PUT", wrong, manifest, docker)
    assert status == 400 and error_code(body) == "DIGEST_INVALID"
    status, headers, _ = await send("PUT", url, manifest, docker)
    assert status == 201 and headers["Docker-Content-Digest"] == str(image.top)
    assert headers["Location"].endswith(f"/v2/app/manifests/{image.top}")
    # An index needs its children in the repository.
    index = build_index(
        {
            Platform(): image,
            Platform("linux", "arm64"): build_image([{"g": b"arm"}], Platform("linux", "arm64")),
        }
    )
    status, _, body = await send(
        "PUT",
        f"{pusher.url}/v2/app/manifests/multi",
        index.top_manifest,
        {"Content-Type": index.media_type},
    )
    assert status == 400 and error_code(body) == "MANIFEST_BLOB_UNKNOWN"


async def test_an_interrupted_push_leaves_no_tag_or_link(
    pusher: RegistryLocal, moto: str, bucket: str
) -> None:
    image = build_image([{"big": os.urandom(400_000)}])
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    _status, headers, _ = await send("POST", f"{pusher.url}/v2/app/blobs/uploads/")
    await send("PATCH", headers["Location"], image.blobs[layer][:100_000])
    # ...and the client dies in the middle of the next chunk.
    _reader, writer = await asyncio.open_connection("127.0.0.1", int(pusher.url.rsplit(":", 1)[1]))
    path = headers["Location"].split(pusher.url, 1)[1]
    writer.write(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n".encode()
        + image.blobs[layer][100_000:150_000]
    )
    await writer.drain()
    writer.close()
    keys = bucket_keys(moto, bucket)
    assert not any("/_layers/" in k or "/_manifests/" in k or "/blobs/" in k for k in keys), keys
    assert (await fetch(f"{pusher.url}/v2/app/manifests/v1"))[0] == 404
    assert (await fetch(f"{pusher.url}/v2/app/blobs/{layer}", method="HEAD"))[0] == 404


async def test_upload_sessions_survive_a_restart_and_expire(
    start_cache: StartCache, tmp_path: Path
) -> None:
    first = await start_cache(allow_push=True)
    status, headers, _ = await send("POST", f"{first.url}/v2/app/blobs/uploads/")
    path = headers["Location"].split(first.url, 1)[1]
    await send("PATCH", headers["Location"], BLOB[:200_000], {"Content-Range": "0-199999"})
    await first.stop()

    second = await start_cache(allow_push=True)
    status, headers, _ = await send("GET", second.url + path)
    assert status == 204 and headers["Range"] == "0-199999"
    status, _, _ = await send(
        "PUT",
        f"{second.url}{path}?digest={BLOB_DIGEST}",
        BLOB[200_000:],
        {"Content-Range": f"200000-{len(BLOB) - 1}"},
    )
    assert status == 201
    assert (await fetch(f"{second.url}/v2/app/blobs/{BLOB_DIGEST}"))[2] == BLOB

    status, headers, _ = await send("POST", f"{second.url}/v2/app/blobs/uploads/")
    await second.stop()
    third = await start_cache(allow_push=True, cache_dir=tmp_path / "cache")
    # Expiry 0: every idle session is abandoned.
    third[PUSHER].uploads._expiry = 0
    assert await third[PUSHER].uploads.expire() == 1
    assert (await send("GET", headers["Location"].replace(second.url, third.url)))[0] == 404


async def test_large_blobs_go_to_s3_in_parts(
    pusher: RegistryLocal, s3proxy: S3Proxy, moto: str, bucket: str
) -> None:
    data = os.urandom(40 << 20)
    digest = Digest.of(data)
    status, headers, _ = await send("POST", f"{pusher.url}/v2/app/blobs/uploads/")
    location = headers["Location"]
    for start in range(0, len(data), 16 << 20):
        chunk = data[start : start + (16 << 20)]
        status, _, _ = await send(
            "PATCH", location, chunk, {"Content-Range": f"{start}-{start + len(chunk) - 1}"}
        )
        assert status == 202
    assert (await send("PUT", f"{location}?digest={digest}"))[0] == 201
    assert s3proxy.count("POST", f"{digest.hex}/data") == 2  # create and complete
    assert s3proxy.count("PUT", f"{digest.hex}/data") == 5  # 5 parts of 8 MiB
    key = blob_key(digest)
    stored = boto3.client("s3", endpoint_url=moto).get_object(Bucket=bucket, Key=key)["Body"].read()
    assert stored == data


async def test_deletes(
    pusher: RegistryLocal, direct_store: StoreSettings, start_cache: StartCache
) -> None:
    image = build_image([{"f": b"to delete"}])
    await seed(direct_store, "app", "v1", image)
    await seed(direct_store, "app", "v2", image)
    url = pusher.url
    assert (await fetch(f"{url}/v2/app/manifests/v1"))[0] == 200
    assert (await send("DELETE", f"{url}/v2/app/manifests/v1"))[0] == 202
    assert (await fetch(f"{url}/v2/app/manifests/v1"))[0] == 404
    assert json.loads((await fetch(f"{url}/v2/app/tags/list"))[2])["tags"] == ["v2"]
    assert (await send("DELETE", f"{url}/v2/app/manifests/v1"))[0] == 404
    # By digest: the revision link goes, and every tag naming it.
    assert (await send("DELETE", f"{url}/v2/app/manifests/{image.top}"))[0] == 202
    assert (await fetch(f"{url}/v2/app/manifests/{image.top}"))[0] == 404
    assert (await fetch(f"{url}/v2/app/manifests/v2"))[0] == 404
    layer = next(iter(image.blobs))
    assert (await send("DELETE", f"{url}/v2/app/blobs/{layer}"))[0] == 202
    assert (await fetch(f"{url}/v2/app/blobs/{layer}"))[0] == 404
    # Without --allow-delete, deletes are refused.
    read_only = await start_cache(
        allow_push=True, cache_dir=pusher.settings.cache.directory.parent / "ro"
    )
    status, _, body = await send("DELETE", f"{read_only.url}/v2/app/manifests/v2")
    assert status == 405 and error_code(body) == "UNSUPPORTED"


async def test_deletes_leave_no_tag_or_repository_behind_on_seaweedfs(
    start_cache: StartCache, seaweedfs: str, tmp_path: Path
) -> None:
    """SeaweedFS goes on listing a "directory" whose objects were all deleted;
    the tag list and the catalog must not (the distribution-spec conformance
    suite's "tags list should reflect manifest deletion"), ours nor those of
    registry:2 on the same bucket, which lists tags by prefix."""
    bucket = f"test-{os.urandom(6).hex()}"
    s3 = boto3.client("s3", endpoint_url=seaweedfs, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    cache = await start_cache(
        store=s3_settings(seaweedfs, bucket), allow_push=True, allow_delete=True
    )
    url = cache.url
    image, other = build_image([{"f": b"one"}]), build_image([{"f": b"two"}])
    await push_image(url, "gone/app", "v1", image)
    await push_image(url, "kept", "v1", other)
    for tag in ("v2", "v3"):
        manifest = image.manifests[image.top]
        headers = {"Content-Type": image.manifest_types[image.top]}
        status, _, _ = await send("PUT", f"{url}/v2/gone/app/manifests/{tag}", manifest, headers)
        assert status == 201

    async def tags(base: str) -> tuple[int, list[str] | str]:
        status, _, body = await fetch(f"{base}/v2/gone/app/tags/list")
        return status, json.loads(body)["tags"] if status == 200 else error_code(body)

    async def catalog(base: str) -> list[str]:
        status, _, body = await fetch(f"{base}/v2/_catalog")
        assert status == 200
        return list(json.loads(body)["repositories"])

    def prefixes(under: str) -> list[str]:
        """What a listing by delimiter shows under repositories/<under>."""
        root = BucketLayout().repositories() + under
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=root, Delimiter="/")
        return [p["Prefix"][len(root) :] for p in listed.get("CommonPrefixes", [])]

    async with run_docker_registry(tmp_path, s3_endpoint=seaweedfs, bucket=bucket) as registry2:
        for base in (url, registry2):
            assert await tags(base) == (200, ["v1", "v2", "v3"])
        assert await catalog(url) == ["gone/app", "kept"]
        assert (await send("DELETE", f"{url}/v2/gone/app/manifests/v2"))[0] == 202
        for base in (url, registry2):
            assert await tags(base) == (200, ["v1", "v3"]), base
        assert prefixes("gone/app/_manifests/tags/") == ["v1/", "v3/"]
        # The last manifest, by digest: its tags go with it, then the repository.
        assert (await send("DELETE", f"{url}/v2/gone/app/manifests/{image.top}"))[0] == 202
        assert await tags(url) == (200, [])  # blob links remain: the name is still known
        assert await tags(registry2) == (404, "NAME_UNKNOWN")  # it has no tags directory
        assert prefixes("gone/app/") == ["_layers/"]
        assert await catalog(url) == ["kept"]
        for digest in image.blobs:
            assert (await send("DELETE", f"{url}/v2/gone/app/blobs/{digest}"))[0] == 202
        for base in (url, registry2):
            assert await tags(base) == (404, "NAME_UNKNOWN")
            assert await catalog(base) == ["kept"]
        assert prefixes("") == ["kept/"]
