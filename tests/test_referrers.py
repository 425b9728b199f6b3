"""The OCI 1.1 referrers API: pushed through any host, found by every host, and
found for manifests that registry:2 wrote (no referrer links)."""

from __future__ import annotations

import json
from typing import Any

from registry_local.backing.opening import open_store
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from registry_local.transfer.imagebuild import build_image

from .support.harness import fetch, seed
from .test_push import _push_image, _request

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
        status, headers, _ = await _request("POST", f"{base}/v2/{name}/blobs/uploads/")
        assert status == 202
        status, _, _ = await _request("PUT", f"{headers['Location']}?digest={digest}", blob)
        assert status == 201
    digest = Digest.of(data)
    status, headers, body = await _request(
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
    start_cache, tmp_path, direct_store
):
    image = build_image([{"app": b"x"}], media_type=OCI_MANIFEST)
    pusher = await start_cache(allow_push=True, allow_delete=True)
    await _push_image(pusher.url, "team/app", "v1", image)
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

    # Nothing refers to the signature: an empty index, not a 404.
    index, _ = await _referrers(pusher.url, "team/app", Digest.of(signature))
    assert index["manifests"] == []

    # Deleting a referrer removes it from the list (on the host that deleted it).
    status, _, _ = await _request("DELETE", f"{pusher.url}/v2/team/app/manifests/{Digest.of(sbom)}")
    assert status == 202
    index, _ = await _referrers(pusher.url, "team/app", image.top)
    assert [d["digest"] for d in index["manifests"]] == [str(Digest.of(signature))]
    async with open_store(direct_store) as store:  # its referrer link is gone too
        assert await store.referrers("team/app", image.top) == [Digest.of(signature)]


async def test_referrers_that_registry2_wrote_are_found_by_a_scan(start_cache, direct_store):
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


async def test_a_reference_that_can_never_exist_is_manifest_unknown(start_cache):
    cache = await start_cache()
    for reference in ("not:a:tag", "-leading-dash", "sha256:short"):
        for method in ("GET", "HEAD"):
            status, _, body = await fetch(
                f"{cache.url}/v2/team/app/manifests/{reference}", method=method
            )
            assert status == 404, (reference, method)
            if method == "GET":
                assert json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
