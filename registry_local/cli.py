"""The `registry-local` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from . import config
from .errors import ConfigError, RegistryLocalError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-local",
        description="A host-local container registry cache that fills from S3 once per blob.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve the Registry v2 API from the cache, filling misses from the backing store",
        description="Serve the Registry v2 / OCI distribution API (pull) on --listen. "
        "Blobs and manifests come from --cache-dir; a miss is read from the backing "
        "store (an S3 bucket in distribution's layout, or the directory --fs-root) once, "
        "however many clients ask at the same time. S3 credentials come from the "
        "standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...).",
    )
    config.add_options(serve, ("store", "serve"))
    sample = commands.add_parser(
        "sample",
        help="write a small sample image into the backing store",
        description="Write a tiny multi-platform image (linux/amd64, linux/arm64) into "
        "the backing store as NAME:TAG, so a first pull has something to fetch.",
    )
    config.add_options(sample, ("store",))
    sample.add_argument("image", nargs="?", default="library/hello:latest", metavar="NAME:TAG")
    return parser


def _serve(settings: config.Settings) -> None:
    from .logs import configure
    from .server.run import serve

    configure(settings.server.log_level, settings.server.log_format)
    asyncio.run(serve(settings))


async def _sample(settings: config.Settings, image: str) -> None:
    from .imagebuild import sample_image
    from .publish import publish
    from .reference import parse_name, parse_tag
    from .server.app import open_store

    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        name, tag = image, "latest"
    name, tag = parse_name(name), parse_tag(tag)
    async with open_store(settings.store) as store:
        await publish(store, name, tag, sample_image())
        print(f"wrote {name}:{tag} to {store.backend.description}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            _serve(config.load(args))
        elif args.command == "sample":
            asyncio.run(_sample(config.load(args, groups=("store",)), args.image))
    except ConfigError as exc:
        print(f"registry-local: {exc}", file=sys.stderr)
        return 2
    except RegistryLocalError as exc:
        print(f"registry-local: {exc}", file=sys.stderr)
        return 1
    return 0
