"""`registry-local warm`: images into the cache dir ahead of a deploy."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .. import config
from ..cache.warm import Warmer, parse_platform
from ..cache.wiring import open_cache
from ..config.flags import WARM_CONCURRENCY, WARM_PLATFORM
from ..errors import ConfigError, RegistryError, RegistryLocalError
from ..oci.reference import parse_image_reference
from ..progress import Progress, human_bytes, plural
from ..telemetry.metrics import Metrics

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "warm")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="NAME[:TAG] or NAME@DIGEST")


def run(args: argparse.Namespace) -> int:
    settings = config.load(args)
    try:
        platforms = [parse_platform(p) for p in WARM_PLATFORM.value(args)]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    images: list[str] = args.images
    return asyncio.run(_warm(settings, images, platforms, WARM_CONCURRENCY.value(args)))


async def _warm(
    settings: config.Settings,
    images: list[str],
    platforms: list[tuple[str, str, str | None]],
    concurrency: int,
) -> int:
    """Warm each image in turn; one that fails is said on stderr and the rest go on."""
    targets = [parse_image_reference(image) for image in images]
    failed = 0
    async with open_cache(settings.cache, settings.store, Metrics()) as cache:
        warmer = Warmer(cache.manifests, cache.blobs, max(1, concurrency))
        for name, reference in targets:
            progress = Progress(f"warming {name}", 0, 0)

            def blob_done(size: int, progress: Progress = progress) -> None:
                progress.advance(size)
                progress.item_done(human_bytes(size))

            try:
                result = await warmer.warm(name, reference, platforms, blob_done)
            except (RegistryError, RegistryLocalError) as exc:
                failed += 1
                message = exc.message if isinstance(exc, RegistryError) else str(exc)
                print(f"{name}: {message}", file=sys.stderr)
                continue
            progress.finish()
            print(
                f"{result.image} ({result.digest}): {plural(result.manifests, 'manifest')}, "
                f"{plural(result.blobs, 'blob')}, {human_bytes(result.bytes)}, "
                f"{result.fetched_blobs} fetched"
            )
    return 1 if failed else 0
