"""`registry-local cached`: what this host's cache dir holds, per repository."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .. import config
from ..config.flags import CACHED_JSON
from ..disk.learned import cached_repositories
from ..layout import CacheLayout
from ..progress import plural
from .paths import existing_cache_dir

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "cached")


def run(args: argparse.Namespace) -> int:
    directory = existing_cache_dir(config.load(args))
    repositories = cached_repositories(CacheLayout(directory))
    if CACHED_JSON.value(args):
        print(json.dumps([dataclasses.asdict(r) for r in repositories], indent=2))
        return 0
    for repository in repositories:
        counts = f"{plural(repository.manifests, 'manifest')}, {plural(repository.blobs, 'blob')}"
        print(f"{repository.name}  ({counts})")
        for tag, digest in repository.tags.items():
            print(f"  {tag}  {digest}")
    if not repositories:
        print(f"nothing cached in {directory}")
    return 0
