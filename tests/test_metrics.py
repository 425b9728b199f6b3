"""Metrics, health and logs: exact deltas around a storm, and what ops files may use."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from registry_local.config import StoreSettings
from registry_local.server.state import BLOBS
from registry_local.transfer.imagebuild import build_image

from .support.harness import StartCache, fetch, pull_image, seed
from .support.processes import StderrLog, free_port, require_tool, serving
from .support.s3proxy import Fault, S3Proxy

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "helm" / "registry-local" / "files" / "registry-local.json"
ALERTS = ROOT / "deploy" / "helm" / "registry-local" / "files" / "alerts.yml"


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


_Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Delta:
    def __init__(self, before: _Samples, after: _Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Summed over every series of `name` whose labels include `labels`."""

        def matching(samples: _Samples) -> float:
            return sum(
                v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)
            )

        return matching(self.after) - matching(self.before)


async def test_exact_deltas_for_a_cold_storm_then_a_warm_one(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image = build_image([{"a": b"x" * 100_000}, {"b": b"y" * 50_000}, {"c": b"z"}])
    await seed(direct_store, "app", "v1", image)
    blob_bytes = sum(len(data) for data in image.blobs.values())
    blobs = len(image.blobs)  # config + 3 layers
    cache = await start_cache(tag_ttl=3600, prefetch=False)  # exact client-driven counts

    before = await scrape(cache.url)
    await asyncio.gather(*(pull_image(cache.url, "app", "v1") for _ in range(20)))
    await cache[BLOBS].settled()  # each fill has ended (its metrics are recorded after its bytes)
    cold = Delta(before, await scrape(cache.url))

    assert cold("registry_local_fills_started_total") == blobs
    # A tag lookup shared by requests is one miss (one lookup), the rest joins.
    tag_misses = cold("registry_local_cache_requests_total", kind="tag", result="miss")
    tag_joins = cold("registry_local_cache_requests_total", kind="tag", result="join")
    assert tag_misses + tag_joins == 20
    assert tag_misses == cold.total("registry_local_tag_revalidations_total")
    misses = cold("registry_local_cache_requests_total", kind="blob", result="miss")
    hits = cold("registry_local_cache_requests_total", kind="blob", result="hit")
    assert misses + hits == 20 * blobs  # every request counted once
    assert cold("registry_local_fill_joins_total") == misses - blobs  # a miss starts or joins
    assert cold("registry_local_fills_finished_total", outcome="committed") == blobs
    assert cold.total("registry_local_blob_bytes_served_total") == 20 * blob_bytes
    assert (
        cold("registry_local_http_requests_total", route="blob", method="GET", status="200")
        == 20 * blobs
    )
    # The S3 metrics agree with what the proxy saw at the S3 boundary.
    gets = Counter(r.key for r in s3proxy.requests if r.method == "GET")
    assert cold("registry_local_s3_requests_total", operation="GetObject", outcome="ok") == sum(
        gets.values()
    )
    assert set(gets.values()) == {1}
    links = sum(len(str(d)) for d in image.blobs) + len(str(image.top)) * 2  # + tag link
    assert (
        cold("registry_local_s3_read_bytes_total") == blob_bytes + len(image.top_manifest) + links
    )
    assert cold.total("registry_local_http_response_bytes_total", route="blob") == 20 * blob_bytes

    before = await scrape(cache.url)
    await asyncio.gather(*(pull_image(cache.url, "app", "v1") for _ in range(20)))
    warm = Delta(before, await scrape(cache.url))
    assert warm("registry_local_cache_requests_total", kind="blob", result="hit") == 20 * blobs
    assert warm("registry_local_cache_requests_total", kind="blob", result="miss") == 0
    assert warm("registry_local_cache_requests_total", kind="tag", result="hit") == 20
    assert warm("registry_local_blob_bytes_served_total", source="disk") == 20 * blob_bytes
    assert warm.total("registry_local_s3_requests_total") == 0
    assert warm("registry_local_fills_started_total") == 0


async def test_series_exist_at_zero_from_the_start(start_cache: StartCache) -> None:
    cache = await start_cache()
    samples = await scrape(cache.url)
    for name, labels in [
        ("registry_local_fills_finished_total", {"outcome": "digest_mismatch"}),
        ("registry_local_s3_requests_total", {"operation": "GetObject", "outcome": "unavailable"}),
        ("registry_local_cache_requests_total", {"kind": "tag", "result": "miss"}),
        ("registry_local_stale_served_total", {"kind": "tag"}),
        ("registry_local_http_requests_total", {"route": "blob", "method": "GET", "status": "200"}),
    ]:
        assert samples[(name, tuple(sorted(labels.items())))] == 0.0
    assert ("process_resident_memory_bytes", ()) in samples
    assert samples[("registry_local_disk_size_bytes", ())] > 0


async def test_health_and_readiness_flip_with_the_backing_store(
    start_cache: StartCache, s3proxy: S3Proxy
) -> None:
    cache = await start_cache()
    status, _, body = await fetch(f"{cache.url}/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    assert (await scrape(cache.url))[("registry_local_ready", ())] == 1.0

    fault = s3proxy.add(Fault(lambda method, key: True, refuse=True))  # S3 goes away
    status, _, body = await fetch(f"{cache.url}/readyz")
    report = json.loads(body)
    assert status == 503 and report["status"] == "unavailable"
    assert report["checks"]["disk"] == "ok" and "unreachable" in report["checks"]["store"]
    assert (await scrape(cache.url))[("registry_local_ready", ())] == 0.0
    status, _, _ = await fetch(f"{cache.url}/healthz")
    assert status == 200  # alive all the same

    fault.times = 0  # S3 is back
    status, _, _ = await fetch(f"{cache.url}/readyz")
    assert status == 200


async def test_metrics_listener_and_json_logs_without_credentials(
    tmp_path: Path, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image = build_image([{"f": b"logged"}])
    await seed(direct_store, "app", "v1", image)
    secret = "s3cr3t-never-in-a-log"
    ops = f"127.0.0.1:{free_port()}"
    args = (
        "--cache-dir",
        str(tmp_path / "cache"),
        "--s3-endpoint",
        s3proxy.url,
        "--s3-bucket",
        bucket,
        "--metrics-listen",
        ops,
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--no-prefetch",  # each blob request starts its own fill: one line says so
    )
    stderr = StderrLog()
    async with serving(*args, env={"AWS_SECRET_ACCESS_KEY": secret}, log=stderr) as (
        url,
        _,
    ):
        await pull_image(url, "app", "v1")
        status, _, metrics_text = await fetch(f"http://{ops}/metrics")
        assert status == 200 and b"registry_local_fills_started_total 2.0" in metrics_text
        assert (await fetch(f"http://{ops}/healthz"))[0] == 200
        assert (await fetch(f"http://{ops}/readyz"))[0] == 200
    log = stderr.data.decode()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    requests = [e for e in lines if e.get("event") == "request"]
    fills = [e for e in lines if e.get("event") == "fill"]
    assert requests and fills
    for entry in requests:
        assert {"time", "method", "path", "status", "bytes", "duration", "cache", "remote"} <= set(
            entry
        )
    assert {e["cache"] for e in requests if "/blobs/" in e["path"]} == {"blob:fill"}
    for entry in fills:
        assert {"digest", "size", "duration", "joiners", "outcome", "retries"} <= set(entry)
    for text in (log, metrics_text.decode()):
        assert secret not in text and "Signature=" not in text and "Authorization" not in text


def _metric_names(expression: str) -> set[str]:
    names = set(re.findall(r"\b(registry_local_[a-z_]+|process_[a-z_]+)\b", expression))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


async def _exported_names(start_cache: StartCache) -> set[str]:
    cache = await start_cache()
    samples = await scrape(cache.url)
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name, _ in samples}


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return found


def _alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


async def test_dashboard_and_alerts_use_only_exported_metrics(start_cache: StartCache) -> None:
    exported = await _exported_names(start_cache)
    used = set()
    for expression in [*_dashboard_expressions(), *_alert_expressions()]:
        used |= _metric_names(expression)
    assert used and used <= exported, used - exported


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    for args in (
        ["check", "rules", str(ALERTS)],
        ["test", "rules", str(ROOT / "deploy" / "prometheus" / "alerts_test.yml")],
    ):
        result = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query, as a recording rule, with Grafana's variables
    replaced by values."""
    promtool = require_tool("promtool")
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*"),
        }
        for i, e in enumerate(_dashboard_expressions())
        if not e.startswith("label_values")
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_every_exported_metric_is_documented(start_cache: StartCache) -> None:
    documented = (ROOT / "docs" / "metrics.md").read_text()
    missing = sorted(
        n
        for n in await _exported_names(start_cache)
        if n.startswith("registry_local_") and re.sub(r"_(total|created)$", "", n) not in documented
    )
    assert not missing
