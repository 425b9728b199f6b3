"""`registry-local serve`: the Registry v2 API from the cache."""

from __future__ import annotations

import argparse
import asyncio

from .. import config
from ..server.run import serve
from ..telemetry.logs import configure

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "serve")


def run(args: argparse.Namespace) -> int:
    settings = config.load(args)
    configure(settings.server.log_level, settings.server.log_format)
    asyncio.run(serve(settings))
    return 0
