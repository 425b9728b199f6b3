"""Byte-compatibility with the CNCF registry (`registry:2`, Debian's docker-registry).

The same bucket is shared both ways: what registry:2 writes with its S3 driver we
serve, and what we write registry:2 serves. skopeo is the client throughout.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import boto3
import pytest

from registry_local.config import StoreSettings
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from registry_local.transfer.imagebuild import Image, Platform, build_image, build_index
from registry_local.transfer.oci_layout import write_oci_layout

from .support.harness import StartCache, pull_image, s3_settings, seed
from .support.processes import run_docker_registry, skopeo
from .support.s3proxy import S3Proxy


def _multi_layer_index() -> Image:
    per_platform = {
        Platform("linux", arch): build_image(
            [
                {"base.txt": b"base " * 100},
                {f"{arch}.bin": arch.encode() * 40_000},
                {"app/run.sh": b"#!/bin/sh\necho hi\n"},
            ],
            Platform("linux", arch),
            media_type=OCI_MANIFEST,
        )
        for arch in ("amd64", "arm64")
    }
    return build_index(per_platform, media_type=OCI_INDEX)


def _pulled_digests(oci_dir: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (oci_dir / "blobs" / "sha256").iterdir()}


def _bucket_objects(moto: str, bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=moto)
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    ]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


async def _skopeo(tmp_path: Path, *args: str) -> None:
    await asyncio.to_thread(skopeo, tmp_path, *args)


async def _push_layout(tmp_path: Path, registry: str, reference: str) -> None:
    """Push the OCI layout in tmp_path/src (tag v1), every platform, with skopeo."""
    await _skopeo(
        tmp_path,
        "copy",
        "--all",
        "--dest-tls-verify=false",
        f"oci:{tmp_path / 'src'}:v1",
        f"docker://{registry.removeprefix('http://')}/{reference}",
    )


async def test_an_image_pushed_by_registry2_is_served_byte_identical(
    start_cache: StartCache, tmp_path: Path, moto: str, bucket: str, s3proxy: S3Proxy
) -> None:
    image = _multi_layer_index()
    write_oci_layout(tmp_path / "src", image, "v1")
    async with run_docker_registry(tmp_path, s3_endpoint=moto, bucket=bucket) as registry2:
        await _push_layout(tmp_path, registry2, "team/app:v1")
    cache = await start_cache()
    rl = cache.url.removeprefix("http://")

    await _skopeo(
        tmp_path,
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://{rl}/team/app:v1",
        f"oci:{tmp_path / 'out'}:v1",
    )

    expected = {str(d) for d in [*image.blobs, *image.manifests]}
    assert _pulled_digests(tmp_path / "out") == expected
    for digest in expected:  # content is byte-identical, not just re-hashed
        path = tmp_path / "out" / "blobs" / "sha256" / Digest.parse(digest).hex
        source = tmp_path / "src" / "blobs" / "sha256" / Digest.parse(digest).hex
        assert path.read_bytes() == source.read_bytes()
    assert set(s3proxy.blob_gets().values()) == {1}
    # And by our own engine-like client, every digest checked.
    assert set(await pull_image(cache.url, "team/app", "v1")) == expected


async def test_an_image_we_write_is_served_by_registry2(
    tmp_path: Path, moto: str, bucket: str
) -> None:
    image = _multi_layer_index()
    await seed(s3_settings(moto, bucket), "team/app", "v1", image)
    async with run_docker_registry(tmp_path, s3_endpoint=moto, bucket=bucket) as registry2:
        await _skopeo(
            tmp_path,
            "copy",
            "--all",
            "--src-tls-verify=false",
            f"docker://{registry2.removeprefix('http://')}/team/app:v1",
            f"oci:{tmp_path / 'out'}:v1",
        )
    assert _pulled_digests(tmp_path / "out") == {str(d) for d in [*image.blobs, *image.manifests]}


async def test_we_write_the_same_objects_as_registry2(tmp_path: Path, moto: str) -> None:
    """Pushed by registry:2 into one bucket and written by us into another, the
    buckets hold the same keys with the same bytes (upload scratch space aside)."""
    image = _multi_layer_index()
    write_oci_layout(tmp_path / "src", image, "v1")
    s3 = boto3.client("s3", endpoint_url=moto)
    theirs, ours = "compat-theirs", "compat-ours"
    for name in (theirs, ours):
        s3.create_bucket(Bucket=name)
    async with run_docker_registry(
        tmp_path, s3_endpoint=moto, bucket=theirs, prefix="/fleet/registry"
    ) as registry2:
        await _push_layout(tmp_path, registry2, "team/app:v1")
    await seed(s3_settings(moto, ours, prefix="/fleet/registry"), "team/app", "v1", image)

    written_by_registry2 = {
        k: v for k, v in _bucket_objects(moto, theirs).items() if "/_uploads/" not in k
    }
    assert _bucket_objects(moto, ours) == written_by_registry2
    assert all(k.startswith("fleet/registry/docker/registry/v2/") for k in written_by_registry2)


async def test_registry2_filesystem_layout_is_the_embedded_store(
    start_cache: StartCache, tmp_path: Path
) -> None:
    """The embedded default reads what registry:2's filesystem driver writes."""
    image = build_image([{"f": b"filesystem driver"}], media_type=OCI_MANIFEST)
    write_oci_layout(tmp_path / "src", image, "v1")
    root = tmp_path / "fsroot"
    async with run_docker_registry(tmp_path, fs_root=root) as registry2:
        await _skopeo(
            tmp_path,
            "copy",
            "--dest-tls-verify=false",
            f"oci:{tmp_path / 'src'}:v1",
            f"docker://{registry2.removeprefix('http://')}/app:v1",
        )
    cache = await start_cache(store=StoreSettings(s3=None, fs_root=root))
    pulled = await pull_image(cache.url, "app", "v1")
    assert set(pulled) == {str(d) for d in [*image.blobs, *image.manifests]}


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
async def test_skopeo_pulls_one_platform_through_the_cache(
    start_cache: StartCache, direct_store: StoreSettings, tmp_path: Path, arch: str
) -> None:
    image = _multi_layer_index()
    await seed(direct_store, "team/app", "v1", image)
    cache = await start_cache()
    await _skopeo(
        tmp_path,
        "copy",
        "--override-arch",
        arch,
        "--src-tls-verify=false",
        f"docker://{cache.url.removeprefix('http://')}/team/app:v1",
        f"dir:{tmp_path / 'out'}",
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_bytes())
    config = json.loads(
        (tmp_path / "out" / Digest.parse(manifest["config"]["digest"]).hex).read_bytes()
    )
    assert config["architecture"] == arch
