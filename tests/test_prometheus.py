"""The dashboard and the alert rules against a real Prometheus: it scrapes a
running registry-local through a small storm, and every panel's query and every
alert's expression, asked through Prometheus's HTTP API, returns series. The
fan-out alert stays quiet while each blob crosses the link once, and fires once
the cache is wiped under the storm and blobs cross it again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from registry_local.config import StoreSettings
from registry_local.layout import CacheLayout
from registry_local.loadtest.run import run_load
from registry_local.transfer.imagebuild import build_image

from .support.harness import fetch, metric, seed
from .support.processes import serving
from .support.prometheus import as_bool, running_prometheus
from .support.s3proxy import Fault, S3Proxy, key_endswith

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "helm" / "registry-local" / "files" / "registry-local.json"
ALERTS = ROOT / "deploy" / "helm" / "registry-local" / "files" / "alerts.yml"
FAN_OUT = "RegistryLocalBlobsFilledAgain"


def _panel_queries() -> list[tuple[str, str]]:
    """(panel title, query) with Grafana's variables as a dashboard would set
    them: every instance, a rate window of a few scrapes."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (
            panel["title"],
            target["expr"].replace("$instance", ".*").replace("$__rate_interval", "1m"),
        )
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def _alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_an_alert_expression_keeps_its_series_as_a_bool_comparison() -> None:
    assert as_bool('rate(x{a=~"5.."}[5m]) > 0.05') == 'rate(x{a=~"5.."}[5m]) > bool  0.05'
    assert as_bool("a == 0") == "a == bool  0"
    assert as_bool("sum(a) > 1.5 * sum(b)") == "sum(a) > bool  1.5 * sum(b)"
    assert as_bool("(a > 1) <= 2") == "(a > 1) <= bool  2"


async def test_dashboard_and_alerts_against_a_real_prometheus(
    tmp_path: Path, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    # Layers above the size kept in memory, so that a wiped cache is read again.
    image = build_image([{"a.bin": os.urandom(300_000)}, {"b.bin": os.urandom(200_000)}])
    await seed(direct_store, "app", "v1", image)
    cache = tmp_path / "cache"
    args = ("--cache-dir", str(cache), "--s3-endpoint", s3proxy.url, "--s3-bucket", bucket)
    async with serving(*args) as (url, _):
        target = url.removeprefix("http://")
        async with running_prometheus(tmp_path / "prometheus", [target], [ALERTS]) as prom:
            first = await run_load(url, "app:v1", clients=10)
            assert first.pulls_ok == 10
            fills = await metric(url, "registry_local_fills_started_total")
            await prom.seen("sum(registry_local_fills_started_total)", fills)
            assert FAN_OUT not in await prom.active_alerts()  # each blob crossed once

            # The cache wiped under the running server: the next storm reads again.
            shutil.rmtree(CacheLayout(cache).blobs_dir)
            second = await run_load(url, "app:v1", clients=10)
            assert second.pulls_ok == 10
            repeats = await metric(url, "registry_local_fill_repeats_total")
            assert repeats >= 2  # both layers
            await prom.seen("sum(registry_local_fill_repeats_total)", repeats)
            assert (await prom.active_alerts()).get(FAN_OUT) == "firing"

            # A tag the bucket cannot answer for: 5xx, for the error panels and alerts.
            s3proxy.add(Fault(key_endswith("broken/_manifests/tags/v1/current/link"), status=500))
            status, _, body = await fetch(f"{url}/v2/broken/manifests/v1")
            assert status == 503 and json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
            # Scraped twice since (a new series): enough for a rate.
            errors = 'registry_local_http_requests_total{status=~"5.."}'
            await prom.seen(f"sum(count_over_time({errors}[1m]))", 2)

            empty = [
                (title, query) for title, query in _panel_queries() if not await prom.query(query)
            ]
            assert empty == [], "panels whose query returns no series"
            silent = [
                name
                for name, expression in _alert_expressions().items()
                if not await prom.query(as_bool(expression))
            ]
            assert silent == [], "alerts whose expression returns no series"
