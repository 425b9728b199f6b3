"""Soak: minutes of mixed pulls while S3 misbehaves; nothing corrupt, nothing leaks.

Starts moto's S3 server, the fault-injecting proxy (tests/support/s3proxy.py)
and `registry-local serve` as a process with a small cache limit, then runs
clients that pull random images whole, pull blobs with ranges, and abort
mid-body, while the proxy injects 503s, resets, stalls, short and corrupted
bodies into a share of S3 reads. Every body that arrives whole is checked
against its digest. Every few seconds it samples the server's RSS, open file
descriptors and asyncio tasks from /metrics; at the end it compares the last
third of the run with the first.

    python bench/soak.py [--minutes 3] [--clients 24] [--fault-rate 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from registry_local.oci.digest import Digest  # noqa: E402
from registry_local.transfer.imagebuild import Image, build_image  # noqa: E402
from tests.support.harness import metric, s3_settings, seed  # noqa: E402
from tests.support.processes import (  # noqa: E402
    AWS_ENV,
    free_port,
    in_thread,
    run_moto,
    sealed_env,
    serve_argv,
)
from tests.support.s3proxy import Fault, S3Proxy  # noqa: E402

FAULTS: list[dict[str, Any]] = [
    {"status": 503, "code": "SlowDown"},
    {"reset_at": 64 << 10},
    {"stall_at": 32 << 10},
    {"truncate_at": 100 << 10},
    {"corrupt_at": 1000},
]


class Tally:
    """What the soak's clients saw: whole and cut reads, errors, corrupt bodies, ranges."""

    def __init__(self) -> None:
        self.whole = self.cut = self.errors = self.corrupt = self.ranges = 0


async def client(base: str, images: list[tuple[str, Image]], tally: Tally, stop: float) -> None:
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < stop:
            name, image = random.choice(images)
            digest = random.choice(list(image.blobs))
            data = image.blobs[digest]
            url = f"{base}/v2/{name}/blobs/{digest}"
            roll = random.random()
            try:
                if roll < 0.15:  # abort mid-body
                    async with session.get(url) as response:
                        await response.content.readany()
                    tally.cut += 1
                elif roll < 0.3:  # a range
                    start = random.randrange(len(data))
                    async with session.get(url, headers={"Range": f"bytes={start}-"}) as response:
                        body = await response.read()
                    if response.status == 206:
                        tally.ranges += 1
                        tally.corrupt += body != data[start:]
                    else:
                        tally.errors += 1
                else:
                    async with session.get(url) as response:
                        body = await response.read()
                    if response.status == 200:
                        tally.whole += 1
                        tally.corrupt += Digest.of(body) != digest
                    else:
                        tally.errors += 1
            except aiohttp.ClientPayloadError:
                tally.cut += 1  # a short body: the client retries, as engines do
            except aiohttp.ClientError:
                tally.errors += 1


async def sample(base: str) -> tuple[float, float, float]:
    return (
        await metric(base, "process_resident_memory_bytes"),
        await metric(base, "process_open_fds"),
        await metric(base, "registry_local_asyncio_tasks"),
    )


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="rl-soak-") as work:
        async with in_thread(run_moto(Path(work) / "moto.log")) as moto:  # it blocks as it starts
            os.environ.update(AWS_ENV)
            s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
            s3.create_bucket(Bucket="soak")
            images: list[tuple[str, Image]] = []
            for number in range(args.images):
                image = build_image(
                    [
                        {"a": os.urandom(random.randint(50, 600) << 10)},
                        {"b": os.urandom(random.randint(5, 80) << 10)},
                    ]
                )
                name = f"soak/app{number}"
                await seed(s3_settings(moto, "soak"), name, "v1", image)
                images.append((name, image))
            proxy = await S3Proxy(moto).start()
            for fault in FAULTS:
                proxy.add(
                    Fault(
                        lambda m, k: (
                            k.endswith("/data") and random.random() < args.fault_rate / len(FAULTS)
                        ),
                        **fault,
                    )
                )
            port = free_port()
            env = sealed_env(
                {
                    **AWS_ENV,
                    "REGISTRY_LOCAL_S3_ENDPOINT": proxy.url,
                    "REGISTRY_LOCAL_S3_BUCKET": "soak",
                    "REGISTRY_LOCAL_LOG_LEVEL": "warning",
                }
            )
            server_log = (Path(work) / "server.log").open("wb")
            server = await asyncio.create_subprocess_exec(
                *serve_argv(
                    port,
                    "--cache-dir",
                    str(Path(work) / "cache"),
                    "--cache-max-bytes",
                    args.cache,
                    "--s3-read-timeout",
                    "1",
                ),
                env=env,
                stderr=server_log,
            )
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                for _ in range(100):  # wait for it to listen
                    try:
                        async with session.get(f"{base}/healthz"):
                            break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
            tally = Tally()
            began = time.monotonic()
            stop = began + args.minutes * 60
            clients = [
                asyncio.create_task(client(base, images, tally, stop)) for _ in range(args.clients)
            ]
            samples = []
            while time.monotonic() + args.sample_every < stop:  # samples under load only
                await asyncio.sleep(args.sample_every)
                samples.append((time.monotonic() - began, *await sample(base)))
                print(
                    f"{samples[-1][0]:6.0f}s  rss {samples[-1][1] / 2**20:6.1f} MiB  "
                    f"fds {samples[-1][2]:4.0f}  tasks {samples[-1][3]:4.0f}  whole "
                    f"{tally.whole}  ranges {tally.ranges}  cut {tally.cut}  errors "
                    f"{tally.errors}  corrupt {tally.corrupt}",
                    flush=True,
                )
            await asyncio.gather(*clients)
            evictions = await metric(base, "registry_local_evictions_total")
            fills = await metric(base, "registry_local_fills_started_total")
            server.terminate()
            await server.wait()
            server_log.close()
            await proxy.close()
            logged = (Path(work) / "server.log").read_text()
            errors_logged = logged.count(" ERROR ") + logged.count("Traceback")

        third = max(1, len(samples) // 3)
        print(f"\nsoak: {args.minutes} min, {args.clients} clients, fault rate {args.fault_rate}")
        print(
            f"bodies: {tally.whole} whole, {tally.ranges} ranges, {tally.cut} cut or aborted, "
            f"{tally.errors} errors, {tally.corrupt} corrupt"
        )
        print(
            f"server: {fills:.0f} fills, {evictions:.0f} evictions, "
            f"{errors_logged} errors or tracebacks logged"
        )
        for index, name in ((1, "RSS MiB"), (2, "open fds"), (3, "tasks")):
            first = statistics.mean(s[index] for s in samples[:third])
            last = statistics.mean(s[index] for s in samples[-third:])
            scale = 2**20 if index == 1 else 1
            print(f"{name:9} first third {first / scale:8.1f}   last third {last / scale:8.1f}")
        return 1 if tally.corrupt or errors_logged else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument(
        "--fault-rate", type=float, default=0.1, help="share of S3 blob reads that get a fault"
    )
    parser.add_argument(
        "--cache",
        default="6MiB",
        help="--cache-max-bytes, below the images' ~11 MiB so blobs churn",
    )
    parser.add_argument("--sample-every", type=float, default=5)
    sys.exit(asyncio.run(main(parser.parse_args())))
