"""Per-repository access on a warm storm: what checking every request costs.

The same storm (clients pulling `team-a/app:v1` whole, all hits: the image's
blobs are on the cache's disk before any storm is timed) through three
registry-local servers, in the same run:

- off: no credentials asked, no policy (the default), the baseline;
- policy: `--auth-htpasswd` (bcrypt at `htpasswd -B`'s cost, 5) and
  `--access-policy` granting `alice` pull of `team-a/*`; every request carries
  her Basic credentials, verified by bcrypt once and remembered after that;
- origin: `--authorize-at-origin` in front of the CNCF registry with token
  auth and its token server (tests/support/token_origin.py), which lets
  `alice` pull `team-a/*`; the origin is asked at the first pull, its answer
  remembered (`--authorize-cache-ttl`, 5 minutes) for the storms.

Each round runs one storm per mode, the modes' order rotated from round to
round so that none always goes first; the report is each mode's median storm
and its ratio to the median storm of "off", and the median of each round's
ratio to that round's "off" storm (paired). The tag TTL is an hour everywhere,
so no storm revalidates the tag (with an origin, that would ask it).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiohttp
import bcrypt
from prometheus_client.parser import text_string_to_metric_families

from bench.contenders import Contenders, Server
from bench.scenarios.result import Json, random_image, ratio
from bench.scenarios.storm import CLIENT_PROCESSES
from registry_local.loadtest.run import run_load
from registry_local.transfer.imagebuild import Image
from tests.support.harness import s3_settings, seed
from tests.support.token_origin import PASSWORDS, basic, token_origin

__all__ = ["MODES", "AccessStorms", "image_of", "run"]

MODES = ("off", "policy", "origin")
REPOSITORY = "team-a/app"
_USER = "alice"  # granted pull of team-a/* by the policy and by the origin
_HTPASSWD_COST = 5  # `htpasswd -B`'s default
_POLICY = f'rules:\n  - subjects: [{_USER}]\n    repositories: ["team-a/*"]\n    actions: [pull]\n'


@dataclass(frozen=True)
class AccessStorms:
    """Each mode's storms, in the order run; the origin's checks during them."""

    clients: int
    image_bytes: int
    seconds: Mapping[str, Sequence[float]]  # by mode, one per round
    # The origin's checks of a client's credentials while the storms ran (not
    # the warm-up pull): 0 when every decision came from memory.
    origin_checks_in_storms: int

    def median(self, mode: str) -> float:
        return statistics.median(self.seconds[mode])

    def paired(self, mode: str) -> float:
        """The median over rounds of the mode's storm over the round's "off" storm:
        less moved than the ratio of medians by a machine whose load drifts
        between rounds."""
        return statistics.median(
            on / off for on, off in zip(self.seconds[mode], self.seconds["off"], strict=True)
        )

    def to_json(self) -> Json:
        off = self.median("off")
        return {
            "clients": self.clients,
            "image_bytes": self.image_bytes,
            "origin_checks_in_storms": self.origin_checks_in_storms,
            "modes": {
                mode: {
                    "seconds": list(runs),
                    "median": self.median(mode),
                    "vs_off": self.median(mode) / off,
                    "paired_vs_off": self.paired(mode),
                }
                for mode, runs in self.seconds.items()
            },
        }

    def report(self) -> str:
        rounds = len(self.seconds["off"])
        lines = [
            f"\n== access: warm storms of {self.clients} clients, "
            f"{self.image_bytes / (1 << 20):.1f} MiB image, median of {rounds} rounds ==",
            f"{'mode':8} {'median s':>9} {'vs off':>7} {'paired':>7}  each round",
        ]
        off = self.median("off")
        for mode, runs in self.seconds.items():
            each = " ".join(f"{s:.2f}" for s in runs)
            lines.append(
                f"{mode:8} {self.median(mode):9.3f} {ratio(self.median(mode), off):>7} "
                f"{self.paired(mode):6.2f}x  {each}"
            )
        lines.append(f"origin checks during the storms: {self.origin_checks_in_storms}")
        return "\n".join(lines)


async def _origin_checks(server: Server) -> int:
    """The origin checks registry-local has made so far (its /metrics)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/metrics") as response:
            text = await response.text()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "registry_local_access_origin_checks_total"
        )
    )


async def run(contenders: Contenders, image: Image, clients: int, rounds: int) -> AccessStorms:
    """`rounds` warm storms of `clients` clients per mode (see the module docstring)."""
    work = contenders.work / "access"
    work.mkdir(exist_ok=True)
    await seed(s3_settings(contenders.s3, "bench"), REPOSITORY, "v1", image)
    hashed = bcrypt.hashpw(PASSWORDS[_USER].encode(), bcrypt.gensalt(rounds=_HTPASSWD_COST))
    htpasswd, policy = work / "htpasswd", work / "policy.yaml"
    htpasswd.write_text(f"{_USER}:{hashed.decode()}\n")
    policy.write_text(_POLICY)
    credentials = basic(_USER, PASSWORDS[_USER])
    ttl = {"TAG_TTL": "3600"}
    async with AsyncExitStack() as stack:
        origin = await stack.enter_async_context(token_origin(work, {REPOSITORY: image}))
        servers: dict[str, tuple[Server, str | None]] = {
            "off": (
                await stack.enter_async_context(contenders.registry_local("access-off", **ttl)),
                None,
            ),
            "policy": (
                await stack.enter_async_context(
                    contenders.registry_local(
                        "access-policy",
                        AUTH_HTPASSWD=str(htpasswd),
                        ACCESS_POLICY=str(policy),
                        **ttl,
                    )
                ),
                credentials,
            ),
            "origin": (
                await stack.enter_async_context(
                    contenders.registry_local(
                        "access-origin",
                        # an empty bucket: the warm-up pull fills from the origin
                        S3_BUCKET=contenders.create_bucket("access-origin"),
                        UPSTREAM=origin.url,
                        UPSTREAM_USERNAME="cache",
                        UPSTREAM_PASSWORD=PASSWORDS["cache"],
                        AUTHORIZE_AT_ORIGIN="true",
                        **ttl,
                    )
                ),
                credentials,
            ),
        }
        ref = f"{REPOSITORY}:v1"
        for mode, (server, authorization) in servers.items():  # warm: blobs and decisions
            warm = await run_load(server.url, ref, clients=1, authorization=authorization)
            if warm.pulls_failed:
                raise RuntimeError(f"access {mode}: the warm-up pull failed: {warm.errors}")
        checks_before = await _origin_checks(servers["origin"][0])
        seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
        for number in range(rounds):
            for mode in (*MODES[number % len(MODES) :], *MODES[: number % len(MODES)]):
                server, authorization = servers[mode]
                report = await run_load(
                    server.url,
                    ref,
                    clients=clients,
                    processes=CLIENT_PROCESSES,
                    authorization=authorization,
                )
                if report.pulls_failed:
                    raise RuntimeError(f"access {mode}: {report.pulls_failed} pulls failed")
                seconds[mode].append(report.seconds)
            print(f"access storms, round {number + 1} of {rounds}: done", flush=True)
        checks = await _origin_checks(servers["origin"][0]) - checks_before
    return AccessStorms(clients, sum(map(len, image.blobs.values())), seconds, checks)


def image_of(default: Image, layers_mb: Sequence[float] | None) -> Image:
    """The image the storms pull: the suite's, unless other layer sizes are asked for."""
    return default if layers_mb is None else random_image(list(layers_mb))
