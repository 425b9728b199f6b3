"""The fleet at any size: the bucket, not one host, carries the fan-out.

The lease holder stages each blob larger than --fleet-part-size in the bucket
part by part while it fills; followers beyond --peer-max-streams read those
parts as they land, and a host that takes a dead holder's lease over reads only
what was not staged from the origin (fleet/blobs.py). Eight `serve` processes
over one SeaweedFS bucket stand in for a fleet (tests/support/fleet.py).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from registry_local.fleet.staging import parts_of
from registry_local.transfer.imagebuild import build_image

from .support.fleet import (
    TOKEN,
    Bench,
    Peers,
    hosts,
    kill_when_followed,
    metric_sum,
    open_bench,
    until,
)
from .support.harness import metric, pull_image, s3_settings, seed
from .support.processes import free_port, serving
from .support.s3proxy import Fault, Rotation, key_endswith

PART = 5 << 20  # --fleet-part-size: S3's smallest, so that 16 MB layers are 4 parts
FLEET = ("--peer-max-streams", "2", "--fleet-part-size", "5MiB")


@pytest.fixture
async def bench(tmp_path: Path, seaweedfs: str) -> AsyncIterator[Bench]:
    # Two 16 MB layers only the origin has, as when the issue was measured.
    image = build_image([{"a.bin": os.urandom(16 << 20)}, {"b.bin": os.urandom(16 << 20)}])
    async with open_bench(tmp_path, seaweedfs, image) as opened:
        yield opened


def _layers(bench: Bench) -> dict[str, int]:
    return {str(d): len(data) for d, data in bench.image.blobs.items() if len(data) > PART}


def _origin_at(bench: Bench, rate: float) -> None:
    """The origin's blob bodies at `rate` bytes/s each, so that followers come
    while the holder fills (a real origin is slower than a local registry)."""
    bench.origin.add(Fault(lambda method, key: method == "GET" and "/blobs/" in key, rate=rate))


async def test_a_storm_on_eight_hosts_sends_no_host_more_than_k_times_a_blob(
    bench: Bench,
) -> None:
    _origin_at(bench, 16e6)
    async with hosts(bench, 8, *FLEET) as fleet:
        pulls = await asyncio.gather(
            *(pull_image(host.url, "team/app", "v1") for host in fleet for _ in range(2))
        )
        assert all(pull == bench.expected() for pull in pulls)  # every digest checked
        await bench.settled()
        served = [
            await metric(h.url, "registry_local_peer_bytes_total", direction="served")
            for h in fleet
        ]
        staged = await metric_sum(
            fleet, "registry_local_fleet_staged_bytes_total", direction="staged"
        )
        read = await metric_sum(fleet, "registry_local_fleet_staged_bytes_total", direction="read")
        refused = await metric_sum(fleet, "registry_local_peer_streams_refused_total")

    layers = _layers(bench)
    assert bench.blob_gets() == {d: 1 for d in bench.blob_gets()}  # once for the fleet
    # No host sent its peers more than --peer-max-streams times the blobs it held.
    blob_bytes = sum(len(data) for data in bench.image.blobs.values())
    assert max(served) <= 2 * blob_bytes, served
    writes = bench.bucket_writes()
    assert writes and max(writes.values()) == 1, writes  # every object written once
    assert bench.keys("registry-local/staging/") == []  # no staged part left
    assert staged == sum(layers.values())  # each layer staged once, by its holder
    assert read > 0 and refused > 0  # the followers past the bound read the bucket
    print(f"served per host {served}, staged {staged}, read {read}, refused {refused}")


def _staged_parts(bench: Bench) -> list[str]:
    return bench.keys("registry-local/staging/")


async def test_a_takeover_resumes_from_the_parts_the_dead_holder_staged(bench: Bench) -> None:
    layer, size = next(iter(_layers(bench).items()))
    held_at = 12 << 20  # the holder has staged [0, 5) and [5, 10) MiB when it dies
    gate = bench.origin.add(Fault(key_endswith(f"blobs/{layer}"), times=1, gate_at=held_at))
    async with hosts(bench, 3, *FLEET, lease_ttl=1.0) as fleet:
        holder, *others = fleet
        first = asyncio.create_task(pull_image(holder.url, "team/app", "v1"))
        await gate.reached.wait()

        async def staged() -> float:
            return len(_staged_parts(bench))

        await until(staged, 2)  # another process's uploads: observed
        pulls = await kill_when_followed(holder, others, first)
        await bench.settled(leases=False)
        followed = "registry_local_fleet_leases_total"
        taken_over = await metric_sum(others, followed, event="taken_over")
        restaged = await metric_sum(
            others, "registry_local_fleet_staged_bytes_total", direction="staged"
        )

    assert all(pull == bench.expected() for pull in pulls)
    assert taken_over >= 1
    staged_before = 10 << 20
    # The dead holder's read, then only what it had not staged.
    assert bench.origin_bytes(layer) <= held_at + (size - staged_before)
    # The parts it staged were kept, not staged again. The other layer was
    # staged by whoever held it: the dead holder, or a host that took it over
    # from the part where the dead holder stopped.
    other = sum(n for d, n in _layers(bench).items() if d != layer)
    rest_of_other = {0} | {other - start for start, _ in parts_of(other, PART)}
    assert restaged - (size - staged_before) in rest_of_other
    assert _staged_parts(bench) == []
    twice = {key: n for key, n in bench.bucket_writes().items() if n > 1}
    assert twice == {}


def _any(method: str, key: str) -> bool:
    return True


def _staged_get(method: str, key: str) -> bool:
    return method == "GET" and "/registry-local/staging/" in key


async def test_slow_down_on_staged_parts_is_retried_and_every_pull_completes(
    bench: Bench,
) -> None:
    """Each staged part's GETs meet bursts of six SlowDowns, more than the five
    failures that open a host's circuit: the reads wait them out, every pull
    completes and verifies, and no circuit opens."""
    layer, _ = next(iter(_layers(bench).items()))
    # The holder stages [0, 5) and [5, 10) MiB, then waits for the origin.
    gate = bench.origin.add(Fault(key_endswith(f"blobs/{layer}"), times=1, gate_at=12 << 20))
    slow = Fault(_any, status=503, code="SlowDown")
    bench.bucket_proxy.rotate(Rotation(_staged_get, [slow] * 6 + [None] * 2, spread=False))
    async with hosts(bench, 6, *FLEET) as fleet:
        pulls = [asyncio.create_task(pull_image(host.url, "team/app", "v1")) for host in fleet]
        # Followers past the holder's two streams read what it staged: a burst
        # of SlowDowns answered, and asked again, while the origin is held.
        await until(lambda: _applied(slow), 6)
        gate.gate.set()
        results = await asyncio.gather(*pulls)
        opened = await metric_sum(fleet, "registry_local_s3_circuit_opened_total")
        read = await metric_sum(fleet, "registry_local_fleet_staged_bytes_total", direction="read")
        await bench.settled()
    assert all(pull == bench.expected() for pull in results)  # every digest checked
    assert slow.applied >= 6 and read > 0  # waited out, then the parts were read
    assert opened == 0
    assert bench.blob_gets() == {d: 1 for d in bench.blob_gets()}
    assert _staged_parts(bench) == []


async def test_six_hosts_ride_out_slow_downs_resets_and_latency_on_every_key(
    tmp_path: Path, seaweedfs: str
) -> None:
    """Every key of the bucket (leases, tags, manifests, blobs, staged parts)
    answers, in turn, a burst of six SlowDowns, a reset connection, and a late
    answer: no pull on any of six hosts fails, and no host's circuit opens."""
    image = build_image([{"a.bin": os.urandom(6 << 20)}, {"b.bin": os.urandom(6 << 20)}])
    async with open_bench(tmp_path, seaweedfs, image) as bench:
        async with hosts(bench, 6, *FLEET) as fleet:
            slow = Fault(_any, status=503, code="SlowDown")
            reset = Fault(_any, refuse=True)
            late = Fault(_any, delay=0.05)
            cycle = [slow] * 6 + [reset, None, late, None, None, None]
            bench.bucket_proxy.rotate(Rotation(_any, cycle))
            pulls = await asyncio.gather(
                *(pull_image(host.url, "team/app", "v1") for host in fleet for _ in range(2))
            )
            opened = await metric_sum(fleet, "registry_local_s3_circuit_opened_total")
            await bench.settled()
    assert all(pull == bench.expected() for pull in pulls)  # every digest checked
    assert opened == 0
    assert slow.applied >= 6 and reset.applied >= 1 and late.applied >= 1  # all were met


async def test_peers_over_tls_refuse_a_host_with_the_wrong_ca_or_token(
    bench: Bench, tmp_path: Path
) -> None:
    peers = Peers.issue(tmp_path / "fleet-tls")
    stranger = Peers.issue(tmp_path / "other-tls")  # a CA the fleet's hosts never used
    layer, _ = next(iter(_layers(bench).items()))
    gate = bench.origin.add(Fault(key_endswith(f"blobs/{layer}"), times=1, gate_at=256 << 10))
    async with hosts(bench, 2, *FLEET, tls=peers) as (holder, friend):
        first = asyncio.create_task(pull_image(holder.url, "team/app", "v1"))
        await gate.reached.wait()
        args = bench.host_args("outsider", free_port(), *FLEET, *peers.args(ca=stranger.ca))
        async with serving(*args) as (outsider, _):
            pulls = [
                asyncio.create_task(pull_image(u, "team/app", "v1")) for u in (friend.url, outsider)
            ]
            received = "registry_local_peer_bytes_total"
            await until(lambda: metric(friend.url, received, direction="received"), 1)
            await until(lambda: metric(outsider, "registry_local_fleet_bucket_fallbacks_total"), 1)
            gate.gate.set()
            assert await first == bench.expected()
            assert await asyncio.gather(*pulls) == [bench.expected()] * 2
            assert await metric(outsider, received, direction="received") == 0

        # Over TLS, by the certificate's name: the token is still required.
        context = ssl.create_default_context(cafile=str(peers.ca))
        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"{holder.peer_url}/peer/v1/staged/{layer}"
            async with session.get(
                url, headers={"Authorization": "Bearer wrong"}, server_hostname=peers.name
            ) as response:
                assert response.status == 401
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS listener
                await session.get(holder.peer_url.replace("https:", "http:") + "/")
    assert bench.blob_gets()[layer] == 1


async def test_followers_waiting_on_the_holder_hold_no_s3_slot(
    tmp_path: Path, seaweedfs: str
) -> None:
    """Eight blobs followed at once, by a host with four S3 slots, while their
    holder is stuck on the origin: a fill from the bucket still runs."""
    many = build_image([{f"{n}.bin": os.urandom(1 << 20)} for n in range(8)])
    ready = build_image([{"ready.bin": os.urandom(2 << 20)}])
    async with open_bench(tmp_path, seaweedfs, many) as bench:
        await seed(s3_settings(bench.endpoint, bench.bucket), "local/ready", "v1", ready)
        layers = [str(d) for d, data in many.blobs.items() if len(data) >= 1 << 20]
        stuck = bench.origin.add(
            Fault(lambda m, key: m == "GET" and key.rsplit("/", 1)[-1] in layers, gate_at=64 << 10)
        )
        async with hosts(bench, 2, *FLEET, "--s3-max-concurrency", "4") as (holder, follower):
            first = asyncio.create_task(pull_image(holder.url, "team/app", "v1"))
            await until(lambda: _applied(stuck), len(layers))  # every layer mid-fill
            second = asyncio.create_task(pull_image(follower.url, "team/app", "v1"))
            followed = "registry_local_fleet_leases_total"
            await until(lambda: metric(follower.url, followed, event="followed"), len(layers))
            # Every layer is followed, none can finish: a bucket fill still gets a slot.
            expected = {
                str(d): data for d, data in [*ready.blobs.items(), *ready.manifests.items()]
            }
            assert await pull_image(follower.url, "local/ready", "v1") == expected
            assert not second.done()
            stuck.gate.set()
            assert await first == bench.expected()
            assert await second == bench.expected()
        assert bench.blob_gets() == {d: 1 for d in bench.blob_gets()}


async def _applied(fault: Fault) -> float:
    return fault.applied


async def test_the_peer_listener_answers_bad_requests_in_the_oci_envelope(bench: Bench) -> None:
    layer = next(iter(_layers(bench)))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with hosts(bench, 1, *FLEET) as (host,), aiohttp.ClientSession() as session:
        for path, status, code in (
            (f"/peer/v1/staged/{layer}?have=many", 400, "UNSUPPORTED"),
            (f"/peer/v1/staged/{layer}", 404, "BLOB_UNKNOWN"),  # no lease held here
            (f"/peer/v1/blobs/{layer}", 404, "BLOB_UNKNOWN"),
            ("/peer/v1/blobs/sha256:nothex", 400, "DIGEST_INVALID"),
        ):
            async with session.get(host.peer_url + path, headers=headers) as response:
                assert response.status == status, path
                assert (await response.json())["errors"][0]["code"] == code, path
