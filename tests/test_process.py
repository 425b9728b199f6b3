"""The `registry-local` command as operators run it: a process of its own."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp

from registry_local.config import StoreSettings
from registry_local.oci.digest import Digest
from registry_local.transfer.imagebuild import build_image, sample_image

from .support.harness import fetch, pull_image, seed
from .support.processes import run_cli, sealed_env, serving, skopeo
from .support.s3proxy import Fault, S3Proxy, key_endswith


async def test_kill_9_during_a_fill_then_restart(
    tmp_path: Path, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image = build_image([{"big.bin": os.urandom(2 << 20)}])
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    kept = build_image([{"kept.bin": os.urandom(1 << 20)}])
    await seed(direct_store, "app", "v1", image)
    await seed(direct_store, "kept", "v1", kept)
    s3proxy.add(Fault(key_endswith(f"{layer.hex}/data"), times=1, gate_at=256 << 10))
    cache_dir = tmp_path / "cache"
    args = (
        "--cache-dir",
        str(cache_dir),
        "--s3-endpoint",
        s3proxy.url,
        "--s3-bucket",
        bucket,
        "--tag-ttl",
        "3600",
    )

    async with serving(*args) as (url, process), aiohttp.ClientSession() as session:
        kept_content = await pull_image(url, "kept", "v1")  # committed before the crash
        response = await session.get(f"{url}/v2/app/blobs/{layer}")
        assert len(await response.content.readany()) > 0  # the fill is under way
        assert len(list((cache_dir / "tmp").iterdir())) == 1
        process.kill()
        await process.wait()
        response.close()

    verify = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "registry_local",
        "verify",
        "--cache-dir",
        str(cache_dir),
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await verify.wait() == 0  # everything committed is intact

    async with serving(*args) as (url, _):
        assert list((cache_dir / "tmp").iterdir()) == []  # the partial is gone
        s3proxy.requests.clear()
        assert await pull_image(url, "kept", "v1") == kept_content
        assert s3proxy.pull_requests() == []  # served from disk alone
        status, _, body = await fetch(f"{url}/v2/app/blobs/{layer}")
        assert status == 200 and Digest.of(body) == layer
        assert set(await pull_image(url, "app", "v1")) == {
            str(d) for d in [*image.blobs, *image.manifests]
        }


async def _cli(*args: str, env: dict[str, str]) -> str:
    code, out, err = await run_cli(*args, env=env)
    assert code == 0, err
    return out + err


async def test_quick_start_flow_sample_import_serve_skopeo(tmp_path: Path) -> None:
    """What scripts/quickstart does: sample, import into the embedded store, serve."""
    env = {**sealed_env(), "REGISTRY_LOCAL_FS_ROOT": str(tmp_path / "store")}
    await _cli("sample", str(tmp_path / "sample"), env=env)
    output = await _cli("import", str(tmp_path / "sample"), "library/hello:latest", env=env)
    assert f"library/hello:latest is {sample_image().top}" in output
    async with serving(
        "--cache-dir", str(tmp_path / "cache"), "--fs-root", str(tmp_path / "store")
    ) as (url, _):
        await asyncio.to_thread(
            skopeo,
            tmp_path,
            "copy",
            "--all",
            "--src-tls-verify=false",
            f"docker://{url.removeprefix('http://')}/library/hello:latest",
            f"dir:{tmp_path / 'out'}",
        )
    image = sample_image()
    out = tmp_path / "out"
    blobs = {f"sha256:{p.name}" for p in out.iterdir() if len(p.name) == 64}
    manifests = {str(Digest.of(p.read_bytes())) for p in out.glob("*manifest.json")}
    assert blobs == {str(d) for d in image.blobs}  # served as stored: no conversion
    assert manifests == {str(d) for d in image.manifests}
