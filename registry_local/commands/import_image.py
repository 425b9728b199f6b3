"""`registry-local import`: an OCI layout or a `docker save` archive into the backing store."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from .. import config
from ..backing.opening import open_store
from ..config.flags import REF, SCRATCH_DIR
from ..errors import ConfigError
from ..oci.reference import parse_image
from ..transfer.importer import import_image

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "import")
    parser.add_argument("source", type=Path, metavar="SOURCE")
    parser.add_argument("image", metavar="NAME[:TAG]")


def run(args: argparse.Namespace) -> int:
    settings = config.load(args)
    name, tag = parse_image(args.image)
    scratch = SCRATCH_DIR.value(args)
    if scratch is not None and not scratch.is_dir():
        raise ConfigError(f"--scratch-dir {scratch} is not a directory")
    source: Path = args.source
    asyncio.run(_import(settings.store, source, name, tag, REF.value(args), scratch))
    return 0


async def _import(
    settings: config.StoreSettings,
    source: Path,
    name: str,
    tag: str,
    ref: str | None,
    scratch: Path | None,
) -> None:
    async with open_store(settings) as store:
        digest = await import_image(store, source, name, tag, ref, scratch)
        print(f"{name}:{tag} is {digest} in {store.backend.description}")
