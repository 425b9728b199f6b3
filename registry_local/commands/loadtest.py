"""`registry-local loadtest`: many clients pull one image at once; what it cost."""

from __future__ import annotations

import argparse
import asyncio
import base64
from pathlib import Path

from .. import config
from ..config.files import read_text
from ..config.flags import (
    CLIENTS,
    LAYER_CONCURRENCY,
    LOAD_AUTH_FILE,
    LOAD_JSON,
    LOAD_PLATFORM,
    PROCESSES,
    RAMP,
    WAVES,
)
from ..errors import ConfigError
from ..loadtest.run import print_report, run_load

__all__ = ["add_arguments", "basic_authorization", "run"]


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
    auth_file = LOAD_AUTH_FILE.value(args)
    authorization = None if auth_file is None else basic_authorization(auth_file)
    load = run_load(
        args.url,
        args.image,
        clients,
        waves,
        ramp,
        LOAD_PLATFORM.value(args),
        processes,
        layers,
        authorization,
    )
    report = asyncio.run(load)
    print_report(report, LOAD_JSON.value(args))
    return 1 if report.pulls_failed else 0


def basic_authorization(path: Path) -> str:
    """The Basic Authorization header of the USER:PASSWORD in `path` (its one
    line); never echoes what the file holds."""
    text = read_text(path, "--auth-file").strip()
    user, sep, _ = text.partition(":")
    if not sep or not user or "\n" in text:
        raise ConfigError(f"--auth-file {path} must hold one line, USER:PASSWORD")
    return "Basic " + base64.b64encode(text.encode()).decode()
