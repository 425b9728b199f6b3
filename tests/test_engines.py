"""Real engines pull through registry-local, on moto's S3 and on SeaweedFS.

dockerd, containerd and podman are configured with the files in deploy/, pull a
Docker Hub name (library/...) of a multi-platform image, and really extract its
layers. Twenty skopeo processes pulling one cold image cost S3 one read per blob.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from registry_local.backing.opening import open_store
from registry_local.transfer.imagebuild import Image, Platform, build_image, build_index
from registry_local.transfer.importer import import_image

from .support.engines import (
    containerd_snapshot_file,
    podman_pull,
    private_dir,
    run_containerd,
    run_dockerd,
)
from .support.harness import RegistryLocal, StartCache, pull_image, s3_settings, seed
from .support.processes import in_thread, require_tool, sealed_env
from .support.s3proxy import S3Proxy


@dataclass
class Setup:
    cache: RegistryLocal
    proxy: S3Proxy
    image: Image
    name: str  # short Docker Hub name, e.g. "app-1a2b"; stored as library/<name>
    endpoint: str
    bucket: str

    @property
    def mirror(self) -> str:
        return self.cache.url.removeprefix("http://")


def _image(name: str) -> Image:
    """Two platforms, two layers each; /hello.txt says which platform it is."""
    return build_index(
        {
            Platform("linux", arch): build_image(
                [
                    {"etc/base": b"base layer\n"},
                    {"hello.txt": f"hello from {name} on linux/{arch}\n".encode()},
                ],
                Platform("linux", arch),
                cmd=("/bin/cat", "/hello.txt"),
            )
            for arch in ("amd64", "arm64")
        }
    )


@pytest.fixture(params=["moto", "seaweedfs"])
def endpoint(request: pytest.FixtureRequest) -> str:
    """The S3 server's endpoint. A sync fixture: the session's S3 server may
    start here, which blocks, so not on the event loop."""
    return str(request.getfixturevalue(request.param))


@pytest.fixture
async def setup(endpoint: str, start_cache: StartCache, tmp_path: Path) -> AsyncIterator[Setup]:
    bucket = f"engines-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    name = f"app-{uuid.uuid4().hex[:6]}"
    image = _image(name)
    await seed(s3_settings(endpoint, bucket), f"library/{name}", "v1", image)
    proxy = await S3Proxy(endpoint).start()
    try:
        cache = await start_cache(store=s3_settings(proxy.url, bucket))
        yield Setup(cache, proxy, image, name, endpoint, bucket)
    finally:
        await proxy.close()


def _each_blob_read_once(setup: Setup) -> None:
    gets = setup.proxy.blob_gets()
    assert gets and set(gets.values()) == {1}, gets


async def test_dockerd_pulls_a_hub_name_through_its_mirror(setup: Setup, tmp_path: Path) -> None:
    async with in_thread(run_dockerd(setup.mirror, tmp_path)) as docker:
        await asyncio.to_thread(docker, "pull", f"{setup.name}:v1")
        inspect = "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}"
        arch = (await asyncio.to_thread(docker, *inspect, f"{setup.name}:v1")).stdout
        assert arch.decode().strip() == "linux/amd64"
        created = await asyncio.to_thread(docker, "create", f"{setup.name}:v1")
        container = created.stdout.decode().strip()
        # `docker cp` writes a tar stream
        extracted = (await asyncio.to_thread(docker, "cp", f"{container}:/hello.txt", "-")).stdout
        assert f"hello from {setup.name} on linux/amd64".encode() in extracted
        # A real `docker save`, imported back, pulls with every digest checked.
        archive = tmp_path / "saved.tar"
        await asyncio.to_thread(docker, "save", "-o", str(archive), f"{setup.name}:v1")
    _each_blob_read_once(setup)
    async with open_store(s3_settings(setup.endpoint, setup.bucket)) as store:
        await import_image(store, archive, "saved/app", "v1", None)
    pulled = await pull_image(setup.cache.url, "saved/app", "v1")
    config = next(json.loads(body) for body in pulled.values() if b'"rootfs"' in body)
    assert config["architecture"] == "amd64"


async def test_containerd_pulls_through_hosts_toml(setup: Setup, tmp_path: Path) -> None:
    ctr = require_tool("ctr")
    async with in_thread(run_containerd(setup.mirror, tmp_path)) as (socket, hosts):
        result = await asyncio.to_thread(
            subprocess.run,
            [
                ctr,
                "--address",
                str(socket),
                "images",
                "pull",
                "--hosts-dir",
                str(hosts),
                "--snapshotter",
                "native",
                f"docker.io/library/{setup.name}:v1",
            ],
            env=sealed_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        files = containerd_snapshot_file(socket, "hello.txt")
        assert [f.read_text() for f in files] == [f"hello from {setup.name} on linux/amd64\n"]
    _each_blob_read_once(setup)


async def test_podman_pulls_through_registries_conf(setup: Setup) -> None:
    with private_dir("rl-podman-") as workdir:
        root = await asyncio.to_thread(
            podman_pull, setup.mirror, workdir, f"docker.io/library/{setup.name}:v1", "arm64"
        )
        assert (root / "hello.txt").read_text() == f"hello from {setup.name} on linux/arm64\n"
    _each_blob_read_once(setup)


async def test_twenty_skopeo_processes_pull_one_cold_image_at_once(
    setup: Setup, tmp_path: Path
) -> None:
    skopeo_path = require_tool("skopeo")
    policy = tmp_path / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')

    async def pull(number: int) -> Path:
        out = tmp_path / f"out-{number}"
        process = await asyncio.create_subprocess_exec(
            skopeo_path,
            "--policy",
            str(policy),
            "copy",
            "--src-tls-verify=false",
            "--override-arch",
            "amd64",
            f"docker://{setup.mirror}/library/{setup.name}:v1",
            f"dir:{out}",
            env=sealed_env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out

    outs = await asyncio.gather(*(pull(n) for n in range(20)))
    amd64 = {p.name for p in outs[0].iterdir() if len(p.name) == 64}
    assert all({p.name for p in out.iterdir() if len(p.name) == 64} == amd64 for out in outs)
    _each_blob_read_once(setup)
    # Only the amd64 image's blobs were wanted, and each was read from S3 once.
    assert len(setup.proxy.blob_gets()) == len(amd64) + 2  # + the index and amd64 manifest
