"""`registry-local gc` on a real bucket (SeaweedFS): two images filled from an
origin (the CNCF registry), a third pushed into the bucket by registry:2, one of
the origin's used again; the other goes, with its unique blobs, and everything
else still pulls through registry:2 and registry-local."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import boto3

from registry_local.config import StoreSettings
from registry_local.layout import BucketLayout, CacheLayout
from registry_local.transfer.imagebuild import Image, build_image
from registry_local.transfer.oci_layout import write_oci_layout

from .support.harness import fetch, pull_image, seed
from .support.processes import (
    require_tool,
    run_cli,
    run_docker_registry,
    sealed_env,
    serving,
    skopeo,
)

LAYOUT = BucketLayout()


def _expected(image: Image) -> dict[str, bytes]:
    return {str(d): data for d, data in [*image.blobs.items(), *image.manifests.items()]}


class Bucket:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.name = f"gc-{uuid.uuid4().hex[:12]}"
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.s3.create_bucket(Bucket=self.name)

    def keys(self, prefix: str = "") -> dict[str, float]:
        """Key -> LastModified of every object under `prefix`."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return {
            item["Key"]: item["LastModified"].timestamp()
            for page in pages
            for item in page.get("Contents", [])
        }

    def clock(self) -> float:
        """The store's clock now: the time of an object just written."""
        key = f"clock/{uuid.uuid4().hex}"
        self.s3.put_object(Bucket=self.name, Key=key, Body=b"")
        when: float = self.s3.head_object(Bucket=self.name, Key=key)["LastModified"].timestamp()
        self.s3.delete_object(Bucket=self.name, Key=key)
        return when

    async def past(self, moment: float) -> float:
        """Wait until the store's clock is past `moment` (its clock, not ours:
        LastModified has whole seconds); returns the clock then."""
        async with asyncio.timeout(30):
            while True:
                now = await asyncio.to_thread(self.clock)
                if now > moment:
                    return now
                await asyncio.sleep(0.2)  # the store's clock moving: observed

    async def holding(self, keys: set[str]) -> None:
        """Wait until every key is in the bucket (another process writes them)."""
        async with asyncio.timeout(30):
            while True:
                if keys <= set(await asyncio.to_thread(self.keys)):
                    return
                await asyncio.sleep(0.05)  # written by another process: observed


def _pushed_whole(pulled: dict[str, bytes], image: Image) -> None:
    """A pull of an image skopeo pushed (as OCI manifests of its own): every blob."""
    assert {str(d): data for d, data in image.blobs.items()}.items() <= pulled.items()


def _blob_keys(image: Image) -> set[str]:
    return {LAYOUT.blob_data(d) for d in [*image.blobs, *image.manifests]}


@asynccontextmanager
async def _host(tmp: Path, bucket: Bucket, origin: str, name: str) -> AsyncIterator[str]:
    args = (
        *("--cache-dir", str(tmp / name), "--s3-endpoint", bucket.endpoint),
        *("--s3-bucket", bucket.name, "--upstream", origin, "--record-use-every", "1s"),
    )
    from .support.processes import StderrLog

    lg = StderrLog()
    try:
        async with serving(*args, log=lg) as (url, _):
            yield url
    finally:
        (tmp / f"{name}-{uuid.uuid4().hex[:4]}.log").write_bytes(lg.data)


async def _gc(bucket: Bucket, *args: str) -> tuple[int, str, str]:
    return await run_cli(
        "gc", "--s3-endpoint", bucket.endpoint, "--s3-bucket", bucket.name, *args, env=sealed_env()
    )


async def _push(tmp: Path, image: Image, registry: str, reference: str) -> None:
    layout = tmp / f"layout-{uuid.uuid4().hex[:6]}"
    write_oci_layout(layout, image, "v1")
    target = f"docker://{registry.removeprefix('http://')}/{reference}"
    await asyncio.to_thread(
        skopeo, tmp, "copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:v1", target
    )


def _config_of(directory: Path, bucket: str) -> Path:
    """The configuration file of the CNCF registry on `bucket`."""
    return next(p for p in directory.glob("registry-*.yml") if bucket in p.read_text())


async def test_gc_removes_what_came_from_the_origin_and_nobody_used(
    tmp_path: Path, seaweedfs: str
) -> None:
    shared = {"shared.bin": os.urandom(150_000)}
    used = build_image([shared, {"a.bin": os.urandom(120_000)}])
    unused = build_image([shared, {"b.bin": os.urandom(130_000)}])
    pushed = build_image([{"c.bin": os.urandom(110_000)}])
    during = build_image([{"d.bin": os.urandom(100_000)}])
    root = tmp_path / "origin"
    await seed(StoreSettings(s3=None, fs_root=root), "team/used", "v1", used)
    await seed(StoreSettings(s3=None, fs_root=root), "team/unused", "v1", unused)
    bucket = Bucket(seaweedfs)
    async with AsyncExitStack() as stack:
        origin = await stack.enter_async_context(run_docker_registry(tmp_path, fs_root=root))
        r2 = await stack.enter_async_context(
            run_docker_registry(tmp_path, s3_endpoint=seaweedfs, bucket=bucket.name)
        )
        await _push(tmp_path, pushed, r2, "team/pushed:v1")
        async with _host(tmp_path, bucket, origin, "first") as host:
            assert await pull_image(host, "team/used", "v1") == _expected(used)
            assert await pull_image(host, "team/unused", "v1") == _expected(unused)
            await bucket.holding(_blob_keys(used) | _blob_keys(unused))
        filled = max(bucket.keys().values())
        middle = await bucket.past(filled + 4)
        async with _host(tmp_path, bucket, origin, "second") as host:
            assert await pull_image(host, "team/used", "v1") == _expected(used)  # a use
            records = {LAYOUT.use_record("team/used", used.top)}
            await bucket.holding(records)
        before = bucket.keys()
        assert before[LAYOUT.use_record("team/used", used.top)] >= middle
        unused_for = f"{await asyncio.to_thread(bucket.clock) - (middle - 2):.0f}s"

        code, out, err = await _gc(bucket, "--unused-for", unused_for, "--grace", "3s", "--dry-run")
        assert code == 0, err
        assert "would untag team/unused:v1" in out and "would remove 1 manifest," in out, out
        assert set(bucket.keys()) == set(before)  # a dry run removes nothing

        # gc beside a push to the bucket and a pull of the used image.
        async with _host(tmp_path, bucket, origin, "third") as host:
            results = await asyncio.gather(
                _gc(bucket, "--unused-for", unused_for, "--grace", "3s"),
                _push(tmp_path, during, r2, "team/during:v1"),
                pull_image(host, "team/used", "v1"),
            )
        code, out, err = results[0]
        assert code == 0, err
        assert results[2] == _expected(used)
        after = set(bucket.keys())
        assert LAYOUT.tag_current_link("team/unused", "v1") not in after
        assert LAYOUT.revision_link("team/unused", unused.top) not in after
        only_unused = _blob_keys(unused) - _blob_keys(used)
        assert only_unused and not only_unused & after  # its own blobs are gone...
        pushed_blobs = {LAYOUT.blob_data(d) for i in (pushed, during) for d in i.blobs}
        assert _blob_keys(used) | pushed_blobs <= after  # ...and no other
        assert f"removed 1 manifest, 1 tag, 3 layer links, {len(only_unused)} blobs" in out, out
        # registry:2 on the bucket lists what is left: SeaweedFS would go on
        # listing the emptied directories of what gc removed.
        status, _, body = await fetch(f"{r2}/v2/team/unused/tags/list")
        assert status == 404, body
        status, _, body = await fetch(f"{r2}/v2/_catalog")
        assert "team/unused" not in json.loads(body)["repositories"], body
        team = LAYOUT.repository("team")
        listed = bucket.s3.list_objects_v2(Bucket=bucket.name, Prefix=team, Delimiter="/")
        assert {p["Prefix"] for p in listed["CommonPrefixes"]} == {
            f"{team}{name}/" for name in ("used", "pushed", "during")
        }

        assert await pull_image(r2, "team/used", "v1") == _expected(used)
        for name, image in (("team/pushed", pushed), ("team/during", during)):
            _pushed_whole(await pull_image(r2, name, "v1"), image)
        # A host that learned the removed image's links before the gc, its cache
        # emptied since: what the bucket lost, it fills again from the origin.
        for directory in ("blobs", "manifests"):
            shutil.rmtree(CacheLayout(tmp_path / "first").root / directory)
        async with _host(tmp_path, bucket, origin, "first") as host:
            assert await pull_image(host, "team/unused", "v1") == _expected(unused)
        async with _host(tmp_path, bucket, origin, "fourth") as host:
            assert await pull_image(host, "team/used", "v1") == _expected(used)
            _pushed_whole(await pull_image(host, "team/pushed", "v1"), pushed)
            # What went is filled again from the origin.
            assert await pull_image(host, "team/unused", "v1") == _expected(unused)
        # The CNCF registry's own collector finds every kept manifest whole, and
        # nothing they reference unreferenced.
        config = _config_of(tmp_path, bucket.name)
        collected = await asyncio.to_thread(
            subprocess.run,
            [require_tool("docker-registry"), "garbage-collect", "--dry-run", str(config)],
            capture_output=True,
            text=True,
            env=sealed_env(),
        )
        assert collected.returncode == 0, collected.stdout + collected.stderr
        report = collected.stdout + collected.stderr
        for image in (used, pushed, during):
            for digest in [*image.blobs, *image.manifests]:
                assert f"eligible for deletion: {digest}" not in report, report[-3000:]


async def _gc_fs(root: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli("gc", "--fs-root", str(root), *args, env=sealed_env())


async def test_pushed_content_stays_unless_asked_and_one_gc_runs_at_a_time(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    image = build_image([{"p.bin": os.urandom(50_000)}])
    await seed(StoreSettings(s3=None, fs_root=root), "team/pushed", "v1", image)
    everything = ("--unused-for", "0s", "--grace", "0s")
    code, out, err = await _gc_fs(root, *everything)
    assert code == 0 and "removed 0 manifests, 0 tags" in out, out + err
    # Another gc holds the lease: this one says so and removes nothing.
    lease = root / LAYOUT.gc_lease()
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text('{"holder": "gc", "host": "elsewhere", "ttl": 120, "serial": 0}')
    code, out, err = await _gc_fs(root, *everything, "--include-pushed")
    assert code == 1 and "another registry-local gc is running" in err, err
    lease.unlink()
    code, out, err = await _gc_fs(root, *everything, "--include-pushed", "--dry-run")
    assert code == 0 and "would untag team/pushed:v1" in out, out + err
    code, out, err = await _gc_fs(root, *everything, "--include-pushed")
    assert (
        code == 0
        and f"removed 1 manifest, 1 tag, 2 layer links, {len(image.blobs) + 1} blobs" in out
    ), out
    assert not (root / LAYOUT.tag_current_link("team/pushed", "v1")).exists()
    assert not (root / LAYOUT.blob_data(image.top)).exists()


async def test_gc_says_what_is_wrong_with_its_input(tmp_path: Path, moto: str) -> None:
    code, _, err = await _gc_fs(tmp_path, "--unused-for", "a while")
    assert code == 2 and "a duration like" in err
    code, _, err = await _gc_fs(tmp_path / "absent", "--unused-for", "1d")
    assert code == 2 and "does not exist" in err and "Traceback" not in err, err
    assert not (tmp_path / "absent").exists()  # nothing made where nothing was
    metrics = tmp_path / "no-such-dir" / "gc.prom"
    code, _, err = await _gc_fs(tmp_path, "--unused-for", "1d", "--metrics-file", str(metrics))
    assert code == 2 and "its directory does not exist" in err, err
    bucket = ("--s3-endpoint", moto, "--s3-bucket", "no-such-bucket")
    code, _, err = await run_cli("gc", *bucket, "--unused-for", "1d", env=sealed_env())
    assert code == 1 and "no such bucket" in err and "Traceback" not in err, err
