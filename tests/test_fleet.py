"""One origin read per blob for the whole fleet: hosts coordinate through the bucket.

Several `registry-local serve` processes stand in for several hosts over one
SeaweedFS bucket, the CNCF registry as their origin (tests/support/fleet.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import boto3
import pytest

from registry_local.layout import BucketLayout
from registry_local.oci.digest import Digest
from registry_local.transfer.imagebuild import build_image

from .support.fleet import Bench, hosts, kill_when_followed, metric_sum, open_bench, until
from .support.harness import fetch, metric, pull_image
from .support.processes import StderrLog, free_port, serving
from .support.s3proxy import Fault, S3Proxy, key_endswith


@pytest.fixture
async def bench(tmp_path: Path, seaweedfs: str) -> AsyncIterator[Bench]:
    image = build_image([{"big.bin": os.urandom(3 << 20)}, {"small.txt": b"from the origin"}])
    async with open_bench(tmp_path, seaweedfs, image) as opened:
        yield opened


def _layer(bench: Bench) -> str:
    return str(max(bench.image.blobs, key=lambda d: len(bench.image.blobs[d])))


async def test_a_storm_on_every_host_reads_each_blob_from_the_origin_once(bench: Bench) -> None:
    layer = _layer(bench)
    # The layer's one origin read is held mid-body until a follower on another
    # host streams from its holder: that they do so is then not left to timing.
    gate = bench.origin.add(Fault(key_endswith(f"blobs/{layer}"), times=1, gate_at=256 << 10))
    async with hosts(bench, 4) as fleet:
        storm = asyncio.gather(
            *(pull_image(host.url, "team/app", "v1") for host in fleet for _ in range(5))
        )
        received = "registry_local_peer_bytes_total"
        await until(lambda: metric_sum(fleet, received, direction="received"), 1)
        assert gate.reached.is_set() and not gate.gate.is_set()
        gate.gate.set()
        pulls = await storm
        assert all(pull == bench.expected() for pull in pulls)
        await bench.settled()
        served = await metric_sum(fleet, "registry_local_peer_bytes_total", direction="served")
        taken = await metric_sum(fleet, "registry_local_fleet_leases_total", event="taken")

    assert bench.blob_gets() == {d: 1 for d in bench.blob_gets()}  # once for the fleet
    manifests = {k: n for k, n in bench.origin_gets().items() if "/manifests/" in k}
    assert manifests and max(manifests.values()) <= 2, manifests
    puts = bench.bucket_writes()
    assert puts and max(puts.values()) == 1, puts  # every object written once
    assert taken >= len(bench.image.blobs)
    assert served > 0  # a follower streamed from the holder while it filled


async def test_a_holder_killed_mid_fill_leaves_every_other_host_whole(bench: Bench) -> None:
    layer = _layer(bench)
    gate = bench.origin.add(Fault(key_endswith(f"blobs/{layer}"), times=1, gate_at=256 << 10))
    async with hosts(bench, 3, lease_ttl=1.0) as fleet:
        holder, *others = fleet
        first = asyncio.create_task(pull_image(holder.url, "team/app", "v1"))
        await gate.reached.wait()  # the holder is mid-fill, its lease taken
        pulls = await kill_when_followed(holder, others, first)
        taken_over = await metric_sum(
            others, "registry_local_fleet_leases_total", event="taken_over"
        )

    assert all(pull == bench.expected() for pull in pulls)
    assert bench.blob_gets()[layer] <= 2  # the dead holder's read, and the one that took over
    assert taken_over >= 1


async def test_a_peer_with_the_wrong_token_gets_401_and_its_host_waits_for_the_bucket(
    bench: Bench, tmp_path: Path
) -> None:
    layer = _layer(bench)
    gate = bench.origin.add(Fault(key_endswith(f"blobs/{layer}"), times=1, gate_at=256 << 10))
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-secret\n")
    async with hosts(bench, 1) as (holder,), contextlib.AsyncExitStack() as stack:
        first = asyncio.create_task(pull_image(holder.url, "team/app", "v1"))
        await gate.reached.wait()
        args = bench.host_args("outsider", free_port())
        args[args.index("--peer-token-file") + 1] = str(wrong)
        outsider_url, _ = await stack.enter_async_context(serving(*args))
        follower = asyncio.create_task(pull_image(outsider_url, "team/app", "v1"))
        await until(lambda: metric(outsider_url, "registry_local_fleet_bucket_fallbacks_total"), 1)
        gate.gate.set()  # the holder finishes and writes the blob through
        assert await first == bench.expected()
        assert await follower == bench.expected()

        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{holder.peer_url}/peer/v1/blobs/{layer}", headers={"Authorization": "Bearer x"}
            ) as response:
                assert response.status == 401
                assert (await response.json())["errors"][0]["code"] == "UNAUTHORIZED"
                assert "Docker-Content-Digest" not in response.headers  # nothing else
    assert bench.blob_gets()[layer] == 1


async def test_a_lease_left_by_a_dead_host_is_taken_over_after_its_time_to_live(
    bench: Bench,
) -> None:
    layer = _layer(bench)
    dead = {"holder": f"http://127.0.0.1:{free_port()}", "host": "gone", "ttl": 1, "serial": 7}
    s3 = boto3.client("s3", endpoint_url=bench.endpoint, region_name="us-east-1")
    key = BucketLayout().blob_lease(Digest.parse(layer))
    s3.put_object(Bucket=bench.bucket, Key=key, Body=json.dumps(dead).encode())
    async with hosts(bench, 1) as (host,):
        assert await pull_image(host.url, "team/app", "v1") == bench.expected()
        leases = "registry_local_fleet_leases_total"
        assert await metric(host.url, leases, event="taken_over") == 1  # one lease, one host
        # Whether it gave up on the dead holder before the lease ran out, or
        # found it run out first, is up to timing: at most once, either way.
        assert await metric(host.url, "registry_local_fleet_bucket_fallbacks_total") <= 1
        await bench.settled()  # the new holder released it, too
    assert bench.blob_gets()[layer] == 1


async def test_a_store_that_ignores_conditional_writes_turns_coordination_off(
    bench: Bench, moto: str, bucket: str
) -> None:
    """moto behind a proxy that drops If-None-Match, as a store without conditional
    writes would: one clear warning, a metric, /readyz says why; pulls still work."""
    proxy = await S3Proxy(moto).start()
    proxy.add(Fault(lambda method, key: method == "PUT", drop_conditions=True))
    try:
        args = bench.host_args("lone", free_port())
        args[args.index("--s3-bucket") + 1 : args.index("--s3-endpoint") + 2] = [
            bucket,
            "--s3-endpoint",
            proxy.url,
        ]
        stderr = StderrLog()
        async with serving(*args, log=stderr) as (url, _):
            assert await pull_image(url, "team/app", "v1") == bench.expected()
            assert await metric(url, "registry_local_fleet_coordination") == 0
            status, _, body = await fetch(f"{url}/readyz")
            assert status == 200
            assert json.loads(body)["checks"]["fleet"].startswith("off: the backing store")
        log = stderr.data.decode()
        assert log.count("fleet coordination off") == 1
        assert "does not honour conditional writes" in log
    finally:
        await proxy.close()
