"""Discovery: the OCI 1.1 referrers API (pushed through any host, found by every
host, found for manifests registry:2 wrote, through an origin) and the catalog."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from registry_local.backing.opening import open_store
from registry_local.config import OriginSettings, StoreSettings
from registry_local.layout import BucketLayout
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from registry_local.transfer.imagebuild import Image, build_image

from .support.harness import StartCache, fetch, pull_image, s3_settings, seed
from .support.processes import require_tool, run_cli, run_docker_registry, sealed_env
from .support.pushing import push_image, send
from .support.s3proxy import S3Proxy

EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
SIGNATURE = "application/vnd.example.signature.v1"
SBOM_CONFIG = "application/vnd.example.sbom.config.v1+json"


def _artifact(subject: Any, payload: bytes, **fields: Any) -> tuple[bytes, dict[Digest, bytes]]:
    """An OCI artifact manifest referring to `subject`, and its blobs."""
    config = fields.pop("config", EMPTY)
    config_type = fields.pop("config_type", EMPTY_TYPE)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": config_type,
            "digest": str(Digest.of(config)),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/octet-stream",
                "digest": str(Digest.of(payload)),
                "size": len(payload),
            }
        ],
        "subject": {
            "mediaType": subject.media_type,
            "digest": str(subject.top),
            "size": len(subject.top_manifest),
        },
        **fields,
    }
    return json.dumps(manifest).encode(), {Digest.of(config): config, Digest.of(payload): payload}


async def _push_artifact(
    base: str, name: str, data: bytes, blobs: dict[Digest, bytes]
) -> dict[str, str]:
    for digest, blob in blobs.items():
        status, headers, _ = await send("POST", f"{base}/v2/{name}/blobs/uploads/")
        assert status == 202
        status, _, _ = await send("PUT", f"{headers['Location']}?digest={digest}", blob)
        assert status == 201
    digest = Digest.of(data)
    status, headers, body = await send(
        "PUT", f"{base}/v2/{name}/manifests/{digest}", data, {"Content-Type": OCI_MANIFEST}
    )
    assert status == 201, body
    return headers


async def _referrers(
    base: str, name: str, subject: Digest, query: str = ""
) -> tuple[Any, dict[str, str]]:
    status, headers, body = await fetch(f"{base}/v2/{name}/referrers/{subject}{query}")
    assert status == 200, body
    assert headers["Content-Type"] == OCI_INDEX
    index = json.loads(body)
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    return index, headers


async def test_referrers_pushed_through_one_host_are_listed_by_every_host(
    start_cache: StartCache, tmp_path: Path, direct_store: StoreSettings
) -> None:
    image = build_image([{"app": b"x"}], media_type=OCI_MANIFEST)
    pusher = await start_cache(allow_push=True, allow_delete=True)
    await push_image(pusher.url, "team/app", "v1", image)
    signature, signature_blobs = _artifact(
        image, b"sig", artifactType=SIGNATURE, annotations={"org.example.signer": "ci"}
    )
    sbom, sbom_blobs = _artifact(image, b"sbom", config=b'{"sbom": 1}', config_type=SBOM_CONFIG)
    headers = await _push_artifact(pusher.url, "team/app", signature, signature_blobs)
    assert headers["OCI-Subject"] == str(image.top)
    await _push_artifact(pusher.url, "team/app", sbom, sbom_blobs)

    expected = sorted(
        [
            {
                "mediaType": OCI_MANIFEST,
                "digest": str(Digest.of(signature)),
                "size": len(signature),
                "artifactType": SIGNATURE,
                "annotations": {"org.example.signer": "ci"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": str(Digest.of(sbom)),
                "size": len(sbom),
                "artifactType": SBOM_CONFIG,  # no artifactType: the config's media type
            },
        ],
        key=lambda d: str(d["digest"]),
    )
    other = await start_cache(cache_dir=tmp_path / "other-host")
    for host in (pusher, other):
        index, headers = await _referrers(host.url, "team/app", image.top)
        assert index["manifests"] == expected
        assert "OCI-Filters-Applied" not in headers

    index, headers = await _referrers(
        other.url, "team/app", image.top, f"?artifactType={SIGNATURE}"
    )
    assert [d["digest"] for d in index["manifests"]] == [str(Digest.of(signature))]
    assert headers["OCI-Filters-Applied"] == "artifactType"

    # Pages, with Link.
    first, headers = await _referrers(other.url, "team/app", image.top, "?n=1")
    assert first["manifests"] == expected[:1]
    link = headers["Link"].split(";")[0].strip("<>")
    status, headers, body = await fetch(f"{other.url}{link}")
    assert status == 200 and json.loads(body)["manifests"] == expected[1:]
    assert "Link" not in headers

    index, headers = await _referrers(other.url, "team/app", image.top, "?n=0")
    assert index["manifests"] == [] and "Link" not in headers

    # Nothing refers to the signature: an empty index, not a 404.
    index, _ = await _referrers(pusher.url, "team/app", Digest.of(signature))
    assert index["manifests"] == []

    # Deleting a referrer removes it from the list (on the host that deleted it).
    status, _, _ = await send("DELETE", f"{pusher.url}/v2/team/app/manifests/{Digest.of(sbom)}")
    assert status == 202
    index, _ = await _referrers(pusher.url, "team/app", image.top)
    assert [d["digest"] for d in index["manifests"]] == [str(Digest.of(signature))]
    async with open_store(direct_store) as store:  # its referrer link is gone too
        assert await store.referrers("team/app", image.top) == [Digest.of(signature)]


async def test_referrers_that_registry2_wrote_are_found_by_a_scan(
    start_cache: StartCache, direct_store: StoreSettings
) -> None:
    """No referrer links: the manifest revisions are scanned."""
    image = build_image([{"app": b"y"}], media_type=OCI_MANIFEST)
    await seed(direct_store, "team/app", "v1", image)
    signature, blobs = _artifact(image, b"sig", artifactType=SIGNATURE)
    async with open_store(direct_store) as store:  # as registry:2 writes a push
        for digest, blob in blobs.items():
            await store.put_blob(digest, blob)
            await store.link_blob("team/app", digest)
        await store.put_blob(Digest.of(signature), signature)
        await store.link_manifest("team/app", Digest.of(signature))
        assert await store.referrers("team/app", image.top) == []
    cache = await start_cache()
    index, _ = await _referrers(cache.url, "team/app", image.top)
    assert [d["digest"] for d in index["manifests"]] == [str(Digest.of(signature))]
    assert index["manifests"][0]["artifactType"] == SIGNATURE


async def test_a_reference_that_can_never_exist_is_manifest_unknown(
    start_cache: StartCache,
) -> None:
    cache = await start_cache()
    for reference in ("not:a:tag", "-leading-dash", "sha256:short"):
        for method in ("GET", "HEAD"):
            status, _, body = await fetch(
                f"{cache.url}/v2/team/app/manifests/{reference}", method=method
            )
            assert status == 404, (reference, method)
            if method == "GET":
                assert json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def _referrers_index(entries: list[tuple[bytes, str]]) -> bytes:
    """An image index as the referrers tag schema holds it."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": str(Digest.of(data)),
                    "size": len(data),
                    "artifactType": artifact_type,
                }
                for data, artifact_type in entries
            ],
        }
    ).encode()


async def test_an_origin_without_the_api_is_asked_for_the_referrers_tag(
    start_cache: StartCache, tmp_path: Path, moto: str, bucket: str
) -> None:
    """registry:2 has no referrers API: its referrers tag (`sha256-<hex>`) is read,
    once per --tag-ttl."""
    image = build_image([{"app": b"z"}], media_type=OCI_MANIFEST)
    signature, blobs = _artifact(image, b"sig", artifactType=SIGNATURE)
    index = _referrers_index([(signature, SIGNATURE)])
    fallback = Image(
        Digest.of(index),
        OCI_INDEX,
        {Digest.of(index): index, Digest.of(signature): signature},
        {Digest.of(index): OCI_INDEX, Digest.of(signature): OCI_MANIFEST},
        blobs,
    )
    root = tmp_path / "origin"
    await seed(StoreSettings(s3=None, fs_root=root), "team/app", "v1", image)
    await seed(
        StoreSettings(s3=None, fs_root=root), "team/app", f"sha256-{image.top.hex}", fallback
    )
    async with run_docker_registry(tmp_path, fs_root=root) as registry:
        proxy = await S3Proxy(registry).start()
        try:
            upstream = OriginSettings(proxy.url, "*")
            cache = await start_cache(store=s3_settings(moto, bucket, upstreams=(upstream,)))
            for _ in range(2):
                found, _ = await _referrers(cache.url, "team/app", image.top)
                assert [(d["digest"], d["artifactType"]) for d in found["manifests"]] == [
                    (str(Digest.of(signature)), SIGNATURE)
                ]
        finally:
            await proxy.close()
    asked = [r.key for r in proxy.requests]
    assert asked == [  # the API (404), then the tag; the second answer from memory
        f"v2/team/app/referrers/{image.top}",
        f"v2/team/app/manifests/sha256-{image.top.hex}",
    ]


async def test_oras_attaches_an_artifact_and_an_origin_mapped_host_lists_it(
    start_cache: StartCache, tmp_path: Path, moto: str, bucket: str
) -> None:
    """The oras SDK pushes an artifact with a subject to one registry-local; it
    is listed there, and by another registry-local that has the first as its
    origin (through the origin's referrers API)."""
    import oras.client
    import oras.oci

    image = build_image([{"app": b"w"}], media_type=OCI_MANIFEST)
    store = StoreSettings(s3=None, fs_root=tmp_path / "origin-store")
    await seed(store, "team/app", "v1", image)
    origin = await start_cache(tmp_path / "origin-cache", store, allow_push=True)
    host = origin.url.removeprefix("http://")
    sbom = tmp_path / "sbom.json"
    await asyncio.to_thread(sbom.write_text, '{"packages": []}')

    def attach() -> int:
        client = oras.client.OrasClient(hostname=host, insecure=True)
        subject = oras.oci.Subject(OCI_MANIFEST, str(image.top), len(image.top_manifest))
        response = client.push(
            target=f"{host}/team/app:sbom",
            files=[f"{sbom}:application/spdx+json"],
            manifest_config="/dev/null:application/vnd.example.sbom.v1",
            manifest_annotations={"org.example.kind": "sbom"},
            subject=subject,
            disable_path_validation=True,
            quiet=True,
        )
        assert response.headers.get("OCI-Subject") == str(image.top)
        return int(response.status_code)

    assert await asyncio.to_thread(attach) == 201

    mirror = await start_cache(
        tmp_path / "mirror-cache",
        s3_settings(moto, bucket, upstreams=(OriginSettings(origin.url, "*"),)),
    )
    for server in (origin, mirror):
        found, _ = await _referrers(server.url, "team/app", image.top)
        [entry] = found["manifests"]
        assert entry["artifactType"] == "application/vnd.example.sbom.v1"
        assert entry["annotations"]["org.example.kind"] == "sbom"


async def test_the_catalog_lists_the_stores_repositories_in_pages(
    start_cache: StartCache, direct_store: StoreSettings, tmp_path: Path
) -> None:
    """Nested names, repositories registry:2 wrote, `n`/`last` and Link; and the
    `cached` command lists what this host has served."""
    for name in ("library/hello", "team/app", "team/app/sub", "zeta"):
        await seed(direct_store, name, "v1", build_image([{"f": name.encode()}]))
    cache = await start_cache(cache_dir=tmp_path / "cache")
    status, headers, body = await fetch(f"{cache.url}/v2/_catalog")
    assert status == 200 and "Link" not in headers
    everything = ["library/hello", "team/app", "team/app/sub", "zeta"]
    assert json.loads(body) == {"repositories": everything}
    pages: list[list[str]] = []
    url = f"{cache.url}/v2/_catalog?n=3"
    while url:
        status, headers, body = await fetch(url)
        pages.append(json.loads(body)["repositories"])
        link = headers.get("Link")
        url = f"{cache.url}{link.split(';')[0].strip('<>')}" if link else ""
    assert pages == [everything[:3], everything[3:]]
    status, _, body = await fetch(f"{cache.url}/v2/_catalog?n=x")
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"

    await pull_image(cache.url, "team/app", "v1")
    code, out, err = await run_cli(
        "cached", "--cache-dir", str(tmp_path / "cache"), "--json", env=sealed_env()
    )
    assert code == 0, err
    [entry] = json.loads(out)
    assert entry["name"] == "team/app" and list(entry["tags"]) == ["v1"]
    assert entry["manifests"] == 1 and entry["blobs"] == 2


async def test_registry2_reads_a_store_with_referrer_links(
    start_cache: StartCache, tmp_path: Path
) -> None:
    """The CNCF registry on the same directory store: its catalog, tags and pulls
    are unchanged by the _referrers links, and its garbage collector runs."""
    image = build_image([{"app": b"v"}], media_type=OCI_MANIFEST)
    store = StoreSettings(s3=None, fs_root=tmp_path / "store")
    await seed(store, "team/app", "v1", image)
    pusher = await start_cache(tmp_path / "cache", store, allow_push=True)
    signature, blobs = _artifact(image, b"sig", artifactType=SIGNATURE)
    await _push_artifact(pusher.url, "team/app", signature, blobs)
    assert (tmp_path / "store" / BucketLayout().referrers_dir("team/app", image.top)).is_dir()
    async with run_docker_registry(tmp_path, fs_root=tmp_path / "store") as registry:
        status, _, body = await fetch(f"{registry}/v2/_catalog")
        assert status == 200 and json.loads(body)["repositories"] == ["team/app"]
        status, _, body = await fetch(f"{registry}/v2/team/app/tags/list")
        assert json.loads(body)["tags"] == ["v1"]
        for digest, data in [(image.top, image.top_manifest), (Digest.of(signature), signature)]:
            status, _, body = await fetch(f"{registry}/v2/team/app/manifests/{digest}")
            assert status == 200 and body == data
    config = await asyncio.to_thread(lambda: next(tmp_path.glob("registry-*.yml")))
    collect = await asyncio.create_subprocess_exec(
        require_tool("docker-registry"),
        "garbage-collect",
        "--dry-run",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=sealed_env(),
    )
    output, _ = await collect.communicate()
    assert collect.returncode == 0, output.decode()
