"""`registry-local prune`: least recently used blobs evicted now, down to a size."""

from __future__ import annotations

import argparse

from .. import config
from ..config.flags import PRUNE_TO
from ..disk.eviction import LOW_WATERMARK, CacheLimit
from ..disk.maintenance import prune
from ..errors import ConfigError
from ..progress import human_bytes
from .paths import existing_cache_dir

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "prune")


def run(args: argparse.Namespace) -> int:
    settings = config.load(args)
    directory = existing_cache_dir(settings)
    to = PRUNE_TO.value(args)
    if to is not None:
        try:
            size, share = config.parse_size(to)
        except ValueError as exc:
            raise ConfigError(f"--to {to!r}: {exc}") from None
        target = CacheLimit(size, share).bytes_for(directory) or 0
    else:
        limit = CacheLimit(settings.cache.max_bytes, settings.cache.max_share)
        configured = limit.bytes_for(directory)
        if configured is None:
            raise ConfigError("give --to SIZE, or set --cache-max-bytes")
        target = int(configured * LOW_WATERMARK)
    report = prune(directory, target)
    print(
        f"removed {report.removed} files: {human_bytes(report.before)} -> "
        f"{human_bytes(report.after)} (target {human_bytes(target)})"
    )
    return 0
