"""A real Prometheus server (Debian's `prometheus`) scraping registry-local, with
its HTTP query API for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .processes import free_port, require_tool, sealed_env

__all__ = ["Prometheus", "as_bool", "running_prometheus"]

INTERVAL = "1s"  # scrape and rule evaluation: a test's storm is over in seconds


class Prometheus:
    """A running Prometheus server's HTTP query API, for the tests' assertions."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    async def _get(self, path: str, **params: str) -> Any:
        async with self._session.get(self.url + path, params=params) as response:
            body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector `expression` evaluates to now; Prometheus's error
        (a bad query) fails the test with its message."""
        data = await self._get("/api/v1/query", query=expression)
        assert data["resultType"] == "vector", (expression, data)
        return list(data["result"])

    async def value(self, expression: str) -> float | None:
        """The value of a one-series expression; None while it has none."""
        result = await self.query(expression)
        return float(result[0]["value"][1]) if result else None

    async def active_alerts(self) -> dict[str, str]:
        """Alert name -> state (`pending`, `firing`) of the alerts active now."""
        data = await self._get("/api/v1/alerts")
        return {a["labels"]["alertname"]: a["state"] for a in data["alerts"]}

    async def last_evaluation(self) -> datetime.datetime:
        """When the rules were last evaluated (the oldest group's)."""
        data = await self._get("/api/v1/rules")
        times = [datetime.datetime.fromisoformat(g["lastEvaluation"]) for g in data["groups"]]
        return min(times)

    async def seen(self, expression: str, at_least: float) -> None:
        """Wait until a scrape has brought `expression` to `at_least`, and the rules
        were evaluated after it (Prometheus's own work, so observed by polling)."""
        async with asyncio.timeout(60):
            while True:
                if (await self.value(expression) or 0) >= at_least:
                    break
                await asyncio.sleep(0.2)
            now = datetime.datetime.now(datetime.UTC)
            while True:
                if await self.last_evaluation() > now:
                    break
                await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def running_prometheus(
    work: Path, targets: list[str], rule_files: list[Path]
) -> AsyncIterator[Prometheus]:
    """Prometheus on a free 127.0.0.1 port scraping `targets` (host:port) every
    second, evaluating `rule_files` as often."""
    binary = require_tool("prometheus")
    config, log = _configure(work, targets, rule_files)
    address = f"127.0.0.1:{free_port()}"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address={address}",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=sealed_env(),
        )
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://{address}"
            async with asyncio.timeout(30):
                while True:
                    assert process.returncode is None, log.read_text()
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(url + "/-/ready") as response:
                            if response.status == 200:
                                break
                    await asyncio.sleep(0.1)  # a process starting up: observed
            yield Prometheus(url, session)
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


def _configure(work: Path, targets: list[str], rule_files: list[Path]) -> tuple[Path, Path]:
    """The configuration file, and the log's path."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    settings = {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": "registry-local", "static_configs": [{"targets": targets}]}
        ],
    }
    config.write_text(yaml.safe_dump(settings))
    return config, work / "prometheus.log"


def as_bool(expression: str) -> str:
    """An alert's expression with its last top-level comparison made a `bool` one,
    so that it returns its series (0 or 1) whether the alert would fire or not."""
    depth, quote, last = 0, "", None
    i = 0
    while i < len(expression):
        c = expression[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0 and c in "<>=!":
            two = expression[i : i + 2]
            if two in ("==", "!=", ">=", "<="):
                last = (i, 2)
                i += 1
            elif c in "<>":
                last = (i, 1)
        i += 1
    assert last is not None, f"no comparison in {expression!r}"
    at, width = last
    return f"{expression[: at + width]} bool {expression[at + width :]}"
