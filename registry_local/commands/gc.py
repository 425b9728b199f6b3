"""`registry-local gc`: what came from an origin and nobody used for long, out of the bucket."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .. import config
from ..backing.opening import open_store
from ..config.flags import DRY_RUN, GRACE, INCLUDE_PUSHED, METRICS_FILE, UNUSED_FOR
from ..errors import ConfigError, RegistryError, RegistryLocalError
from ..progress import human_bytes, plural
from ..retention.gc import GcBusy, GcReport, collect
from ..retention.plan import Removal
from ..telemetry.gc_metrics import GcRunMetrics
from ..telemetry.metrics import Metrics

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "gc")


def run(args: argparse.Namespace) -> int:
    settings = config.load(args)
    if settings.store.s3 is None and not settings.store.fs_root.is_dir():
        raise ConfigError(f"--fs-root {settings.store.fs_root} does not exist: nothing to collect")
    metrics_file = METRICS_FILE.value(args)
    if metrics_file is not None and not metrics_file.parent.is_dir():
        raise ConfigError(f"--metrics-file {metrics_file}: its directory does not exist")
    gc = config.GcSettings(
        UNUSED_FOR.value(args), GRACE.value(args), DRY_RUN.value(args), INCLUDE_PUSHED.value(args)
    )
    metrics = GcRunMetrics()
    try:
        report = asyncio.run(_collect(settings.store, gc))
    except (GcBusy, RegistryError, RegistryLocalError):
        metrics.failed()
        _write_metrics(metrics, metrics_file)
        raise
    if report.dry_run:
        _list_planned(report.removal)
    counts = {
        "manifest": len(report.removal.manifests),
        "tag": len(report.removal.tags),
        "tag_history": len(report.removal.tag_links),
        "layer_link": len(report.removal.layers),
        "blob": report.removed_blobs,
        "staged_part": len(report.removal.staged),
    }
    metrics.ran(counts, report.removed_bytes, report.seconds, report.dry_run)
    _write_metrics(metrics, metrics_file)
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{verb} {plural(counts['manifest'], 'manifest')}, {plural(counts['tag'], 'tag')}, "
        f"{plural(counts['layer_link'], 'layer link')}, {plural(counts['blob'], 'blob')} "
        f"({human_bytes(report.removed_bytes)}), {plural(counts['staged_part'], 'staged part')} "
        f"in {report.seconds:.1f} s"
        + (f"; kept {len(report.kept)} blobs written or linked meanwhile" if report.kept else "")
    )
    return 0


async def _collect(store_settings: config.StoreSettings, gc: config.GcSettings) -> GcReport:
    def say(line: str) -> None:
        print(f"gc: {line}", file=sys.stderr, flush=True)

    async with open_store(store_settings) as store:
        return await collect(store, gc, Metrics().fleet, say)


def _list_planned(removal: Removal) -> None:
    for name, digest in removal.manifests:
        print(f"would unlink manifest {name}@{digest}")
    for name, tag in removal.tags:
        print(f"would untag {name}:{tag}")
    for digest, size in removal.blobs:
        print(f"would remove blob {digest} ({human_bytes(size)})")


def _write_metrics(metrics: GcRunMetrics, path: Path | None) -> None:
    if path is None:
        return
    try:
        metrics.write(path)
    except OSError as exc:
        raise ConfigError(f"--metrics-file {path}: {exc.strerror or exc}") from None
