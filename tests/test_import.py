"""import and export: OCI layouts and docker-archives in, OCI layouts out."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from registry_local.backing.opening import open_store
from registry_local.config import StoreSettings
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from registry_local.transfer.exporter import export_image
from registry_local.transfer.files import SourceError
from registry_local.transfer.imagebuild import (
    Image,
    Platform,
    build_image,
    build_index,
    sample_image,
)
from registry_local.transfer.importer import import_image
from registry_local.transfer.oci_layout import write_oci_layout

from .support.harness import StartCache, pull_image
from .support.processes import run_cli, sealed_env, skopeo


def _index() -> Image:
    return build_index(
        {
            Platform("linux", a): build_image(
                [{"l1": os.urandom(50_000)}, {"l2": a.encode()}],
                Platform("linux", a),
                media_type=OCI_MANIFEST,
            )
            for a in ("amd64", "arm64")
        },
        media_type=OCI_INDEX,
    )


async def _import(store: StoreSettings, source: Path, image: str, ref: str | None = None) -> Digest:
    name, _, tag = image.partition(":")
    async with open_store(store) as distribution:
        return await import_image(distribution, source, name, tag, ref)


async def test_an_oci_layout_imports_unchanged(
    start_cache: StartCache, direct_store: StoreSettings, tmp_path: Path
) -> None:
    image = _index()
    write_oci_layout(tmp_path / "layout", image, "v1")
    assert await _import(direct_store, tmp_path / "layout", "team/app:v1") == image.top
    cache = await start_cache()
    assert set(await pull_image(cache.url, "team/app", "v1")) == {
        str(d) for d in [*image.blobs, *image.manifests]
    }


@pytest.mark.parametrize("compression", [None, "gzip"])
async def test_a_docker_archive_is_converted_as_the_engine_would(
    start_cache: StartCache, direct_store: StoreSettings, tmp_path: Path, compression: str | None
) -> None:
    image = build_image(
        [{"a.txt": b"first layer"}, {"b.bin": os.urandom(80_000)}], media_type=OCI_MANIFEST
    )
    write_oci_layout(tmp_path / "layout", image, "v1")
    archive = tmp_path / "saved.tar"
    await asyncio.to_thread(
        skopeo,
        tmp_path,
        "copy",
        f"oci:{tmp_path / 'layout'}:v1",
        f"docker-archive:{archive}:app:v1",
    )
    if compression == "gzip":  # `docker save | gzip`
        packed = tmp_path / "saved.tar.gz"
        with archive.open("rb") as plain, gzip.open(packed, "wb") as out:
            shutil.copyfileobj(plain, out)
        archive = packed

    top = await _import(direct_store, archive, "app:v1")

    cache = await start_cache()
    pulled = await pull_image(cache.url, "app", "v1")
    manifest = json.loads(pulled[str(top)])
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    ] * 2
    config = json.loads(pulled[manifest["config"]["digest"]])
    source_config = next(json.loads(d) for d in image.blobs.values() if d.startswith(b"{"))
    assert config["rootfs"]["diff_ids"] == source_config["rootfs"]["diff_ids"]
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        raw = gzip.decompress(pulled[layer["digest"]])
        assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == diff_id


async def test_an_oci_archive_imports(
    start_cache: StartCache, direct_store: StoreSettings, tmp_path: Path
) -> None:
    image = _index()
    write_oci_layout(tmp_path / "layout", image, "v1")
    archive = tmp_path / "image.tar"
    await asyncio.to_thread(
        skopeo,
        tmp_path,
        "copy",
        "--all",
        f"oci:{tmp_path / 'layout'}:v1",
        f"oci-archive:{archive}:v1",
    )
    assert await _import(direct_store, archive, "app:v1") == image.top
    cache = await start_cache()
    assert len(await pull_image(cache.url, "app", "v1")) == len(image.blobs) + len(image.manifests)


async def test_export_then_import_round_trips(
    direct_store: StoreSettings, tmp_path: Path, start_cache: StartCache
) -> None:
    image = _index()
    write_oci_layout(tmp_path / "layout", image, "v1")
    await _import(direct_store, tmp_path / "layout", "team/app:v1")
    async with open_store(direct_store) as store:
        assert await export_image(store, "team/app", "v1", tmp_path / "exported") == image.top
    assert await _import(direct_store, tmp_path / "exported", "copy/app:v2") == image.top
    cache = await start_cache()
    assert set(await pull_image(cache.url, "copy/app", "v2")) == {
        str(d) for d in [*image.blobs, *image.manifests]
    }
    # skopeo reads the export as any OCI layout.
    await asyncio.to_thread(skopeo, tmp_path, "inspect", "--raw", f"oci:{tmp_path / 'exported'}:v1")


async def test_docker_typed_layouts_are_readable_by_tag_and_keep_their_digests(
    direct_store: StoreSettings, tmp_path: Path
) -> None:
    """skopeo reads only OCI-typed manifests from a layout: the sample (a Docker
    manifest list) and the export of a Docker-typed image carry OCI copies that
    it reads by tag, while import takes back the originals, digests unchanged."""
    code, _, err = await run_cli("sample", str(tmp_path / "sample"), env=sealed_env())
    assert code == 0, err
    sample = sample_image()
    for arch in ("amd64", "arm64"):
        await asyncio.to_thread(
            skopeo,
            tmp_path,
            "copy",
            "--override-arch",
            arch,
            f"oci:{tmp_path / 'sample'}:latest",
            f"dir:{tmp_path / arch}",
        )
        config = json.loads((tmp_path / arch / "manifest.json").read_bytes())["config"]
        assert config["digest"] in {str(d) for d in sample.blobs}  # same bytes, new manifest
    assert await _import(direct_store, tmp_path / "sample", "library/hello:latest") == sample.top

    image = build_image([{"f": b"docker"}], media_type=DOCKER_MANIFEST)
    write_oci_layout(tmp_path / "layout", image, "v1")
    await _import(direct_store, tmp_path / "layout", "team/app:v1")
    async with open_store(direct_store) as store:
        assert await export_image(store, "team/app", "v1", tmp_path / "out") == image.top
    raw = await asyncio.to_thread(
        skopeo, tmp_path, "inspect", "--raw", f"oci:{tmp_path / 'out'}:v1"
    )
    copy = json.loads(raw.stdout)
    assert copy["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert [layer["digest"] for layer in copy["layers"]] == [
        layer["digest"] for layer in json.loads(image.top_manifest)["layers"]
    ]
    assert await _import(direct_store, tmp_path / "out", "copy/app:v1") == image.top


async def test_bad_sources_are_refused_clearly(direct_store: StoreSettings, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="not an OCI image layout"):
        await _import(direct_store, tmp_path / "empty", "app:v1")
    with pytest.raises(SourceError, match="neither a directory nor an archive"):
        await _import(direct_store, tmp_path / "missing", "app:v1")
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar")
    with pytest.raises(SourceError, match="not a tar archive"):
        await _import(direct_store, tmp_path / "junk.tar", "app:v1")
    # Several images and no --ref; then a corrupted blob.
    image = build_image([{"x": b"1"}])
    write_oci_layout(tmp_path / "two", image, "a")
    index = json.loads((tmp_path / "two" / "index.json").read_text())
    second = dict(index["manifests"][0], annotations={"org.opencontainers.image.ref.name": "b"})
    index["manifests"].append(second)
    (tmp_path / "two" / "index.json").write_text(json.dumps(index))
    with pytest.raises(SourceError, match="pick one with --ref: a, b"):
        await _import(direct_store, tmp_path / "two", "app:v1")
    layer = next(d for d, data in image.blobs.items() if not data.startswith(b"{"))
    (tmp_path / "two" / "blobs" / "sha256" / layer.hex).write_bytes(b"tampered")
    with pytest.raises(SourceError, match="does not match its digest"):
        await _import(direct_store, tmp_path / "two", "app:v1", ref="b")


async def test_the_cli_imports_with_progress_and_exports(tmp_path: Path) -> None:
    env = {**sealed_env(), "REGISTRY_LOCAL_FS_ROOT": str(tmp_path / "store")}
    image = build_image([{"f": b"cli"}], media_type=DOCKER_MANIFEST)
    write_oci_layout(tmp_path / "layout", image, "latest")

    async def cli(*args: str) -> tuple[int, str]:
        code, out, err = await run_cli(*args, env=env)
        return code, out + err

    code, out = await cli("import", str(tmp_path / "layout"), "app")
    assert code == 0 and f"app:latest is {image.top}" in out
    assert "writing app:latest: sha256:" in out  # a progress line per blob
    code, out = await cli("export", "app:latest", str(tmp_path / "out"))
    assert code == 0 and (tmp_path / "out" / "index.json").exists()
    code, out = await cli("export", "app:nope", str(tmp_path / "out2"))
    assert code == 1 and "no tag app:nope" in out and "Traceback" not in out
    code, out = await cli("import", str(tmp_path / "nothing"), "app")
    assert code == 1 and "neither a directory nor an archive" in out
    assert (
        Digest.of((tmp_path / "out" / "blobs" / "sha256" / image.top.hex).read_bytes()) == image.top
    )
