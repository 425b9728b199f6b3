"""Cold storms: 1, 20, 50 and 100 clients pulling one image at once from a fresh
cache, through registry-local (then the same storm again, warm: what the clients
themselves cost), the CNCF registry on the bucket, and the CNCF registry in
proxy mode in front of that."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.contenders import Contenders
from bench.scenarios.result import MIB, Json, ratio
from bench.scenarios.storm import CLIENT_PROCESSES, Storm, cold_storm
from registry_local.loadtest.run import run_load
from registry_local.transfer.imagebuild import Image

__all__ = ["ColdRow", "ColdStorms", "run"]


@dataclass(frozen=True)
class ColdRow:
    """One contender's cold storm; registry-local's also timed again, warm."""

    storm: Storm
    warm_seconds: float | None = None

    def to_json(self) -> dict[str, Json]:
        row = self.storm.to_json()
        if self.warm_seconds is not None:
            row["warm_seconds"] = self.warm_seconds
        return row


@dataclass(frozen=True)
class ColdStorms:
    """The storms by number of clients, in the order run, then by contender."""

    rows: Mapping[int, Mapping[str, ColdRow]]

    def to_json(self) -> Json:
        return {
            str(clients): {name: row.to_json() for name, row in by_name.items()}
            for clients, by_name in self.rows.items()
        }

    def report(self) -> str:
        mb = 1 / MIB
        lines = [
            "\n== cold storms (same image, fresh caches) ==",
            f"{'clients':>7} {'contender':18} {'seconds':>8} {'vs 1 client':>11} {'vs warm':>8} "
            f"{'S3 GETs/blob':>12} {'S3 bytes/blob':>13} {'S3 MiB':>8} {'peak RSS MiB':>12}",
        ]
        fewest = next(iter(self.rows.values()))
        for clients, by_name in self.rows.items():
            for name, row in by_name.items():
                storm = row.storm
                one = fewest[name].storm.seconds
                warm = (
                    ratio(storm.seconds, row.warm_seconds) if row.warm_seconds is not None else "-"
                )
                lines.append(
                    f"{clients:7} {name:18} {storm.seconds:8.2f} "
                    f"{ratio(storm.seconds, one):>11} {warm:>8} "
                    f"{storm.s3_blob_gets_per_blob:12.2f} "
                    f"{storm.s3_blob_bytes_ratio:12.2f}x {storm.s3_bytes * mb:8.1f} "
                    f"{storm.peak_rss * mb:12.1f}"
                )
        return "\n".join(lines)


async def run(contenders: Contenders, image: Image, client_counts: Sequence[int]) -> ColdStorms:
    """A storm of each size on each contender, each registry-local on a fresh cache."""
    s3, ref = contenders.s3_throttle, "bench/app:v1"
    rows: dict[int, dict[str, ColdRow]] = {}
    async with contenders.registry2("direct") as r2:
        for clients in client_counts:
            row = rows[clients] = {}
            async with contenders.registry_local(f"cold-{clients}") as rl:
                storm = await cold_storm(rl, s3, ref, clients, image.blobs)
                # The same storm again, all hits: what the clients themselves cost.
                warm = await run_load(rl.url, ref, clients=clients, processes=CLIENT_PROCESSES)
            row["registry-local"] = ColdRow(storm, warm.seconds)
            row["registry:2 on S3"] = ColdRow(await cold_storm(r2, s3, ref, clients, image.blobs))
            async with contenders.registry2(f"proxy-{clients}", upstream=r2.url) as proxy:
                row["registry:2 proxy"] = ColdRow(
                    await cold_storm(proxy, s3, ref, clients, image.blobs)
                )
            print(f"cold storm, {clients} clients: done", flush=True)
    return ColdStorms(rows)
