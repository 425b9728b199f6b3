"""`registry-local loadtest`: many clients pull one image at once; what it cost."""

from __future__ import annotations

import argparse
import asyncio

from .. import config
from ..config.flags import (
    CLIENTS,
    LAYER_CONCURRENCY,
    LOAD_JSON,
    LOAD_PLATFORM,
    PROCESSES,
    RAMP,
    WAVES,
)
from ..errors import ConfigError
from ..loadtest.run import print_report, run_load

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="e.g. http://127.0.0.1:5000")
    parser.add_argument("image", metavar="IMAGE[:TAG]", help="NAME[:TAG] or NAME@DIGEST")
    config.add_flags(parser, "loadtest")


def run(args: argparse.Namespace) -> int:
    clients, waves, ramp = CLIENTS.value(args), WAVES.value(args), RAMP.value(args)
    processes, layers = PROCESSES.value(args), LAYER_CONCURRENCY.value(args)
    if min(clients, waves, processes, layers) < 1 or ramp < 0:
        raise ConfigError(
            "--clients, --waves, --processes and --layer-concurrency must be at least 1, "
            "--ramp at least 0"
        )
    load = run_load(
        args.url, args.image, clients, waves, ramp, LOAD_PLATFORM.value(args), processes, layers
    )
    report = asyncio.run(load)
    print_report(report, LOAD_JSON.value(args))
    return 1 if report.pulls_failed else 0
