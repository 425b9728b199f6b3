"""`registry-local export`: an image from the backing store as an OCI image layout."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from .. import config
from ..backing.opening import open_store
from ..oci.reference import parse_image
from ..transfer.exporter import export_image
from .paths import layout_destination

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "export")
    parser.add_argument("image", metavar="NAME[:TAG]")
    parser.add_argument("dest", type=Path, metavar="DEST")


def run(args: argparse.Namespace) -> int:
    settings = config.load(args)
    name, tag = parse_image(args.image)
    dest = layout_destination(args.dest)
    asyncio.run(_export(settings.store, name, tag, dest))
    return 0


async def _export(settings: config.StoreSettings, name: str, tag: str, dest: Path) -> None:
    async with open_store(settings) as store:
        digest = await export_image(store, name, tag, dest)
        print(f"wrote {name}:{tag} ({digest}) to {dest}")
